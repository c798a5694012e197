"""Real processes: a run killed (SIGKILL) or stopped (SIGTERM/SIGINT) mid-epoch and resumed with
``dmlkit train --resume`` ends exactly as an uninterrupted run with the same seed (CPU)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cli_output import message_lines
from dmlkit.base.files import load_weights
from dmlkit.base.run_dir import RunDir
from dmlkit.engine.checkpoint import CheckpointFolder, load_state

# 3 epochs x 30 batches; random crops and flips (drawn per batch position), MDR (method
# state), Adam.
ARGS = ["train", "digits-smoke", "--set", "eval.nmi=false", "--set", "train.epochs=3",
        "--set", "train.batches_per_epoch=30", "--set", "train.checkpoint_every=4",
        "--set", "data.transform=small_aug", "--set", "data.image_size=8",
        "--set", "method.name=mdr"]
TIMING = ("train_seconds", "train_img_per_s")


def dmlkit(*args, root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "dmlkit", *args], {"env": env, "cwd": root, "text": True,
                                                      "stdout": subprocess.PIPE,
                                                      "stderr": subprocess.PIPE}


def run(*args, root):
    cmd, kw = dmlkit(*args, root=root)
    return subprocess.run(cmd, timeout=120, **kw)


def start(name, root):
    cmd, kw = dmlkit(*ARGS, "--set", f"run.root={root}", "--set", f"run.name={name}", root=root)
    return subprocess.Popen(cmd, **kw)


def wait_for_mid_epoch_checkpoint(proc, folder, batch=8, timeout=60.0):
    """Poll until the pair of epoch 1, batch ``batch`` exists (the run is then mid-epoch)."""
    state, _ = CheckpointFolder(folder).files(0, batch)
    t0 = time.monotonic()
    while not state.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "no mid-epoch checkpoint appeared"
        time.sleep(0.005)


def metrics_rows(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    res = run(*ARGS, "--set", f"run.root={root}", "--set", "run.name=full", root=root)
    assert res.returncode == 0, res.stderr
    return root / "full"


def check_same_as_uninterrupted(run_dir, full):
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (full, run_dir))
    assert b["final"] == a["final"] and b["best_val"] == a["best_val"]
    assert b["epochs_trained"] == 3
    assert metrics_rows(run_dir) == metrics_rows(full)  # one row per epoch, same values


def test_sigkill_mid_epoch_then_resume_matches(tmp_path, uninterrupted):
    proc = start("killed", tmp_path)
    wait_for_mid_epoch_checkpoint(proc, tmp_path / "killed" / "checkpoints")
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert RunDir(tmp_path / "killed").state().state == "interrupted"  # "running", pid gone
    assert not (tmp_path / "killed" / "metrics.json").exists()
    res = run("train", "--resume", str(tmp_path / "killed"), root=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "(epoch 1, after iteration" in res.stdout  # continued mid-epoch, not from the start
    check_same_as_uninterrupted(tmp_path / "killed", uninterrupted)


def test_sigterm_checkpoints_exits_143_and_resumes_exactly(tmp_path, uninterrupted):
    proc = start("term", tmp_path)
    wait_for_mid_epoch_checkpoint(proc, tmp_path / "term" / "checkpoints")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    [line] = message_lines(err)  # progress, the run directory, then the one-line stop
    assert f"run directory: {tmp_path / 'term'}\n" in err and "Traceback" not in err
    assert "stopped by SIGTERM at epoch 1, iteration" in line
    assert f"dmlkit train --resume {tmp_path / 'term'}" in line
    saved = line.split("; saved ")[1].split(";")[0]
    assert "state-0000-" in saved and load_state(saved)["batch"] > 0
    res = run("train", "--resume", str(tmp_path / "term"), root=tmp_path)
    assert res.returncode == 0, res.stderr
    check_same_as_uninterrupted(tmp_path / "term", uninterrupted)


def test_sigint_checkpoints_and_exits_130(tmp_path):
    proc = start("int", tmp_path)
    wait_for_mid_epoch_checkpoint(proc, tmp_path / "int" / "checkpoints", batch=4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err and "dmlkit train --resume" in err
    assert f"run directory: {tmp_path / 'int'}\n" in err
    assert len(message_lines(err)) == 1
    assert RunDir(tmp_path / "int").state().state == "interrupted"
    folder = CheckpointFolder(tmp_path / "int" / "checkpoints")
    epoch, batch = folder.pairs()[-1]
    state, weights = folder.load(epoch, batch)
    assert (epoch, batch) == (state["epoch"], state["batch"]) and batch > 0 and weights
    assert load_weights(folder.files(epoch, batch)[1])


# Sharing (two steps per iteration) + MDR on the class head + Guided (master and cached targets):
# every part's state and both streams' positions resume exactly.
COMPOSED = ["train", "compose-smoke", "--set", "eval.nmi=false", "--set", "train.epochs=2",
            "--set", "train.checkpoint_every=2", "--set", "eval.evaluate_untrained=false"]


@pytest.mark.slow
def test_full_composition_killed_mid_epoch_resumes_exactly(tmp_path):
    def composed(name):
        cmd, kw = dmlkit(*COMPOSED, "--set", f"run.root={tmp_path}", "--set", f"run.name={name}",
                         root=tmp_path)
        return cmd, kw

    cmd, kw = composed("full")
    res = subprocess.run(cmd, timeout=300, **kw)
    assert res.returncode == 0, res.stderr
    cmd, kw = composed("killed")
    proc = subprocess.Popen(cmd, **kw)
    wait_for_mid_epoch_checkpoint(proc, tmp_path / "killed" / "checkpoints", batch=4,
                                  timeout=240.0)
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    folder = CheckpointFolder(tmp_path / "killed" / "checkpoints")
    state, _ = folder.load(*folder.pairs()[-1])
    assert {"mdr.regularizer.mu", "sharing.decorrelation.regressor.0.weight"} <= \
        state["method"].keys()
    res = run("train", "--resume", str(tmp_path / "killed"), root=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "(epoch 1, after iteration" in res.stdout
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("full", "killed"))
    for key in ("final", "final_shared", "final_concat", "best_val"):
        assert b[key] == a[key], key
    assert metrics_rows(tmp_path / "killed") == metrics_rows(tmp_path / "full")
