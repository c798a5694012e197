"""`train`'s run states and `resumed_config`'s rule, in-process (and through the CLI)."""

import os

import pytest
from typer.testing import CliRunner

from cli_output import message_lines
from dmlkit import config
from dmlkit.base.run_dir import RunDir
from dmlkit.cli.app import app
from dmlkit.engine.train import resumed_config, train
from dmlkit.engine.trainer import Trainer
from dmlkit.errors import CheckpointError, ConfigError, TrainingError


def smoke(tmp_path, *overrides):
    return config.load("digits-smoke", [f"run.root={tmp_path}", "eval.nmi=false", *overrides])


def invoke(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, message_lines(res.output)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return train(smoke(root, "run.name=done")).path


def test_finished_run_state(finished):
    assert RunDir(finished).state().state == "finished"


def fit_then(exc, seen):
    def fit(self):
        seen.append(self.run.state())
        raise exc

    return fit


def test_interrupted_outside_the_loop_then_evaluate_reproduce_resume(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(Trainer, "fit", fit_then(KeyboardInterrupt(), seen))
    code, lines = invoke("train", "digits-smoke", "--set", f"run.root={tmp_path}",
                         "--set", "run.name=cut", "--set", "eval.nmi=false")
    run = tmp_path / "cut"
    assert code == 130 and len(lines) == 1
    assert lines[0].startswith("stopped by SIGINT") and f"dmlkit train --resume {run}" in lines[0]
    assert seen[0].state == "running" and str(os.getpid()) in seen[0].message
    assert RunDir(run).state().state == "interrupted"
    for command in ("evaluate", "reproduce"):
        code, lines = invoke(command, run)
        assert code == 2 and len(lines) == 1, lines
        assert "interrupted before finishing" in lines[0]
        assert f"continue it with: dmlkit train --resume {run}" in lines[0]
    assert not (tmp_path / "cut-reproduced").exists()  # nothing retrained
    monkeypatch.undo()
    code, _ = invoke("train", "--resume", run)
    assert code == 0 and RunDir(run).state().state == "finished"


def test_failed_run_state_and_message(tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "fit", fit_then(TrainingError("boom"), []))
    with pytest.raises(TrainingError):
        train(smoke(tmp_path, "run.name=bad"))
    state = RunDir(tmp_path / "bad").state()
    assert (state.state, state.message) == ("failed", "boom")
    code, lines = invoke("evaluate", tmp_path / "bad")
    assert code == 2 and lines == [f"error: cannot evaluate {tmp_path / 'bad'}: it failed (boom); "
                                   f"fix the cause and continue it with dmlkit train --resume "
                                   f"{tmp_path / 'bad'}, or start a new run"]
    monkeypatch.undo()
    res = CliRunner().invoke(app, ["train", "digits-smoke", "--set", f"run.root={tmp_path}",
                                   "--set", "run.name=bad", "--set", "train.epochs=1",
                                   "--set", "train.batches_per_epoch=1"])
    assert res.exit_code == 0  # the name is taken: said when the run directory is created
    assert f"run directory: {tmp_path / 'bad-2'} ({tmp_path / 'bad'} exists: failed)" in res.output


@pytest.mark.parametrize("overrides,message", [
    (["optim.lr=0.1"], "--set optim.lr cannot change"),
    (["train.batch_size=12"], "--set train.batch_size cannot change"),
    (["train.epochs=1"], "can only be extended beyond its 2 epochs"),
])
def test_resume_refuses_changes_other_than_more_epochs(finished, overrides, message):
    with pytest.raises(ConfigError, match=message):
        resumed_config(finished, overrides)


def test_resume_with_a_preset_is_refused(finished):
    code, lines = invoke("train", "digits-smoke", "--resume", finished)
    assert code == 2 and lines == [f"error: --resume continues {finished} with its own config: "
                                   "drop 'digits-smoke' (--set train.epochs=N may extend it)"]


def test_resume_extension_needs_an_epoch_free_schedule(tmp_path):
    run = RunDir(tmp_path / "cos")
    run.path.mkdir()
    run.write_config(smoke(tmp_path, "optim.schedule=cosine"))
    with pytest.raises(ConfigError, match="cosine learning-rate schedule is fixed to its 2"):
        resumed_config(run.path, ["train.epochs=3"])


def test_resume_extends_epochs_like_a_longer_run(tmp_path, finished):
    longer = train(smoke(tmp_path, "run.name=three", "train.epochs=3")).read_json("metrics.json")
    run = RunDir(tmp_path / "extended")
    run.path.mkdir()
    for p in finished.iterdir():  # a copy of the finished 2-epoch run
        if p.is_file():
            (run.path / p.name).write_bytes(p.read_bytes())
    (run.checkpoints).mkdir()
    for p in (finished / "checkpoints").iterdir():
        (run.checkpoints / p.name).write_bytes(p.read_bytes())
    assert resumed_config(run.path, ["train.epochs=2"]) == run.read_config()
    code, _ = invoke("train", "--resume", run.path, "--set", "train.epochs=3")
    assert code == 0
    assert run.read_config().train.epochs == 3 and run.state().state == "finished"
    extended = run.read_json("metrics.json")
    assert extended["epochs_trained"] == 3 and extended["final"] == longer["final"]


def test_a_diverged_model_is_named_as_such(tmp_path):
    """Every bad step skipped, yet the weights blew up: the error says so (not 'NaN in query')."""
    with pytest.raises(TrainingError, match="the model diverged: its embeddings are not finite"):
        train(smoke(tmp_path, "run.name=div", "train.skip_nonfinite=true", "optim.lr=1e30",
                    "train.epochs=1"))
    assert RunDir(tmp_path / "div").state().state == "failed"


def _disk_full_after_creation(monkeypatch, in_place_too=False):
    """Every atomic write after the run directory exists fails with ENOSPC (no block for the
    temp file); with ``in_place_too`` overwriting state.json fails as well."""
    import builtins
    import errno
    import tempfile

    from dmlkit.base import atomic_write

    full, create, real_mkstemp, real_open = [False], RunDir.create.__func__, tempfile.mkstemp, open

    def mkstemp(*args, **kwargs):
        if full[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_mkstemp(*args, **kwargs)

    def creating(cls, cfg):
        run = create(cls, cfg)
        full[0] = True
        return run

    def opening(file, mode="r", *args, **kwargs):
        if in_place_too and full[0] and mode == "r+b":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(atomic_write.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(RunDir, "create", classmethod(creating))
    monkeypatch.setattr(builtins, "open", opening)


def test_full_disk_reports_the_first_error_and_the_run_ends_failed(tmp_path, monkeypatch):
    """Issue 30, item 7: the first failed write (the best weights) is the error raised, not
    state.json's; state.json says failed (written in place)."""
    _disk_full_after_creation(monkeypatch)
    with pytest.raises(CheckpointError, match="No space left on device") as e:
        train(smoke(tmp_path, "run.name=full"))
    assert "state.json" not in str(e.value) and "best.safetensors" in str(e.value)
    state = RunDir(tmp_path / "full").state()
    assert state.state == "failed" and "best.safetensors" in state.message


def test_full_disk_without_room_for_the_state_says_why(tmp_path, monkeypatch, capsys):
    _disk_full_after_creation(monkeypatch, in_place_too=True)
    with pytest.raises(CheckpointError, match=r"best\.safetensors: No space left on device"):
        train(smoke(tmp_path, "run.name=full"))
    assert RunDir(tmp_path / "full").state().state == "running"
    err = capsys.readouterr().err
    assert "state.json still says running: cannot record 'failed'" in err
    assert "No space left on device" in err


def test_eval_test_false_skips_every_test_evaluation(tmp_path):
    """Benchmark runs (eval.test=false) validate but never embed the test split."""
    run = train(smoke(tmp_path, "eval.test=false", "train.epochs=1", "data.val_fraction=0.4",
                      "train.eval_every=1"))
    metrics = run.read_json("metrics.json")
    assert "best_val" in metrics
    assert not {"final", "untrained"} & set(metrics)
