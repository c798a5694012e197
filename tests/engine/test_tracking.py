"""Experiment trackers read back with their own readers: TensorBoard's EventAccumulator and
MLflow's client hold every value of metrics.csv and metrics.json, each step exactly once,
also across a SIGKILL and ``dmlkit train --resume``."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmlkit import config as config_mod
from dmlkit.base.run_dir import RunDir
from dmlkit.engine.checkpoint import CheckpointFolder
from dmlkit.engine.tracking.logger import require
from dmlkit.engine.tracking.tracker import Tracker
from dmlkit.errors import ConfigError

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)

from dmlkit.engine.tracking.mlflow_logger import RUN_DIR_TAG, default_uri


def tensorboard_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar event as written (no purging of re-logged steps: duplicates would show)."""
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0},
                           purge_orphaned_data=False)
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def mlflow_history(root: Path, run_dir: Path, experiment="dmlkit"):
    client = MlflowClient(default_uri(root))
    exp = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([exp], f"tags.`{RUN_DIR_TAG}` = '{run_dir.resolve()}'")
    assert len(runs) == 1  # a resumed run continues its MLflow run
    run = runs[0]
    return client, run, {k: [(m.step, m.value) for m in client.get_metric_history(
        run.info.run_id, k)] for k in run.data.metrics}


def expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv per column (step = epoch) and metrics.json's test metrics."""
    rows = RunDir(run_dir).metrics_rows()
    out = {k: [(int(r["epoch"]), r[k]) for r in rows if k in r]
           for k in rows[0] if k != "epoch"}
    results = json.loads((run_dir / "metrics.json").read_text())
    for name in ("final", "untrained", "best_val"):
        for k, v in results[name].items():
            out[f"{name}/{k}"] = [(results["epochs_trained"], v)]
    return out


def check(history, want, rel):
    assert sorted(history) == sorted(want)
    for key, values in want.items():
        steps = [s for s, _ in history[key]]
        assert steps == [s for s, _ in values], key  # each step once, none lost
        for (_, got), (_, v) in zip(history[key], values, strict=True):
            assert math.isclose(got, v, rel_tol=rel, abs_tol=rel * abs(v)), key


ARGS = ["train", "digits-smoke", "--set", "eval.nmi=false", "--set", "train.epochs=2",
        "--set", "train.batches_per_epoch=12", "--set", "train.checkpoint_every=4",
        "--set", "method.name=mdr", "--set", "run.loggers=[tensorboard, mlflow]"]


@pytest.mark.slow
def test_sigkill_and_resume_log_every_step_exactly_once(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kw = {"env": env, "cwd": tmp_path, "text": True, "stdout": subprocess.PIPE,
          "stderr": subprocess.PIPE}
    run_dir = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "dmlkit", *ARGS, "--set",
                             f"run.root={tmp_path}", "--set", "run.name=r"], **kw)
    state, _ = CheckpointFolder(run_dir / "checkpoints").files(1, 4)  # mid epoch 2
    while not state.exists():
        assert proc.poll() is None, proc.communicate()
    proc.kill()
    proc.wait(timeout=30)
    assert len(tensorboard_history(run_dir)["train_loss"]) == 1  # epoch 1 was logged
    res = subprocess.run([sys.executable, "-m", "dmlkit", "train", "--resume", str(run_dir)],
                         timeout=300, **kw)
    assert res.returncode == 0, res.stderr
    want = expected(run_dir)
    assert {"train_loss", "val_map_at_r", "train_img_per_s", "method_mdr_levels_0",
            "final/map_at_r"} <= set(want)
    check(tensorboard_history(run_dir), want, rel=1e-6)  # TensorBoard keeps float32
    client, run, history = mlflow_history(tmp_path, run_dir)
    check(history, want, rel=1e-12)
    cfg = config_mod.load(str(run_dir / "config.yaml"))
    assert run.data.params["method.parts.mdr.levels"] == str(cfg.method.parts.mdr.levels)
    assert run.data.params["optim.lr"] == str(cfg.optim.lr) and run.info.status == "FINISHED"
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "metrics.csv", "losses.png", "mdr_levels.png"} <= files


def test_reopened_tracker_catches_up_without_duplicates(tmp_path):
    """A process that died after the checkpoint of epoch 2 but before logging it: the next
    open logs epoch 2 (and 3) once, reading the steps back from TensorBoard itself."""
    cfg = config_mod.load("digits-smoke", ["run.loggers=[tensorboard]"])
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_map_at_r": 0.1 * e} for e in (1, 2, 3)]
    first = Tracker.open(cfg, tmp_path)
    first.log_epochs(rows[:1])
    first.close(False)
    again = Tracker.open(cfg, tmp_path)
    again.log_epochs(rows[:2])
    again.log_epochs(rows)
    again.close(True)
    history = tensorboard_history(tmp_path)
    assert history == {k: [(r["epoch"], pytest.approx(r[k], rel=1e-6)) for r in rows]
                       for k in ("train_loss", "val_map_at_r")}


def test_a_logger_that_is_not_installed_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"^run.loggers: mlflow is not installed: pip install "
                                          r"'dmlkit\[mlflow\]'$"):
        require("no_such_module_for_dmlkit", "mlflow")


def test_unknown_logger_is_a_config_error():
    with pytest.raises(ConfigError, match=r"run\.loggers"):
        config_mod.load("digits-smoke", ["run.loggers=[comet]"])


def wandb_records(path: Path):
    """The protobuf records of a W&B transaction log (``run-<id>.wandb``): a 7-byte header,
    then LevelDB-log framing (32 KiB blocks; records of crc32, length, type: full, or first /
    middle / last fragments) around wandb.proto Records."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:  # padding
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


@pytest.mark.slow
def test_wandb_offline_run_holds_metrics_csv_and_files(tmp_path):
    pytest.importorskip("wandb")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    res = subprocess.run(
        [sys.executable, "-m", "dmlkit", "train", "digits-smoke", "--set", "eval.nmi=false",
         "--set", "train.epochs=2", "--set", "train.batches_per_epoch=3", "--set",
         "run.loggers=[wandb]", "--set", f"run.root={tmp_path}", "--set", "run.name=w"],
        env=env, cwd=tmp_path, text=True, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr
    [offline] = (tmp_path / "w" / "wandb").glob("offline-run-*")
    history: dict[str, list[tuple[int, float]]] = {}
    for record in wandb_records(next(offline.glob("run-*.wandb"))):
        if record.WhichOneof("record_type") == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                     for i in record.history.item}
            step = record.history.step.num
            for k, v in items.items():
                if not k.startswith("_"):
                    history.setdefault(k, []).append((step, v))
    check(history, expected(tmp_path / "w"), rel=1e-12)
    assert {"report.md", "metrics.csv", "losses.png"} <= {f.name for f in
                                                         (offline / "files").iterdir()}
