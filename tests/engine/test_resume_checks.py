"""What --resume refuses (a config.yaml edited after the checkpoint; a run marked running on
another host without --force), and search workers waiting for such a run (issue 30)."""

import json
import os
import platform

import pytest
from typer.testing import CliRunner

from dmlkit import config
from dmlkit.base.run_dir import RunDir
from dmlkit.cli.app import app
from dmlkit.engine.train import train
from dmlkit.engine.trainer_checkpoints import EditedConfig
from dmlkit.errors import CheckpointError, TrainingError
from dmlkit.protocol import benchmark


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A digits-smoke run of 1 epoch (checkpointed), marked interrupted."""
    root = tmp_path_factory.mktemp("runs")
    cfg = config.load("digits-smoke", [f"run.root={root}", "run.name=r", "eval.nmi=false",
                                       "train.epochs=1", "eval.evaluate_untrained=false"])
    run = train(cfg)
    run.set_state("interrupted", "stopped by a test")
    return run.path


def test_an_edited_config_is_refused_naming_the_keys(stopped):
    run = RunDir(stopped)
    original = run.config_path.read_bytes()
    cfg = run.read_config()
    lr = cfg.optim.lr
    cfg.optim.lr, cfg.run.name = lr * 10, "moved"  # run.*: where files are, not checked
    run.write_config(cfg)
    try:
        with pytest.raises(EditedConfig, match=rf"config.yaml was edited after state-0001.*: "
                                               rf"optim.lr \({lr!r} -> {lr * 10!r}\); ") as e:
            train(None, resume=stopped)
        assert "\n" not in str(e.value) and "run.name" not in str(e.value)
        assert run.state().message == "stopped by a test"  # left as it was
    finally:
        run.config_path.write_bytes(original)
    train(None, resume=stopped)  # as trained: resumes
    assert run.state().state == "finished"


def mark_running(run, host, pid):
    (run / "state.json").write_text(json.dumps({"state": "running", "message": f"process {pid} "
                                                f"on {host}", "pid": pid, "host": host}))


def test_a_run_marked_running_on_another_host_resumes_with_force(stopped):
    mark_running(stopped, "elsewhere.example", 4242)
    with pytest.raises(CheckpointError, match=r"process 4242 on elsewhere.example\), on another "
                                              r"host: if that process is gone, continue it with "
                                              rf"dmlkit train --resume {stopped} --force"):
        train(None, resume=stopped)
    mark_running(stopped, platform.node(), os.getpid())  # alive here: --force does not apply
    with pytest.raises(CheckpointError, match="being trained by another process"):
        train(None, resume=stopped, force=True)
    mark_running(stopped, "elsewhere.example", 4242)
    assert train(None, resume=stopped, force=True).state().state == "finished"


def test_force_without_resume_is_refused():
    res = CliRunner().invoke(app, ["train", "digits-smoke", "--force"])
    assert res.exit_code == 2 and "--force applies to --resume" in res.output


def test_search_workers_stop_waiting_for_a_silent_run_on_another_host(stopped, monkeypatch):
    cfg = RunDir(stopped).read_config()
    mark_running(stopped, "elsewhere.example", 4242)
    monkeypatch.setattr(benchmark, "RUNNING_POLL_S", 0.01)
    monkeypatch.setattr(benchmark, "STALE_AFTER_S", 0.5)
    with pytest.raises(TrainingError, match=r"on another host, and nothing in it changed for "
                                            rf"\d+ min: .*--resume {stopped} --force"):
        benchmark.run_or_reuse(cfg)
