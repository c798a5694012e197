"""``--json``: every result-printing command writes exactly one JSON document on stdout, with
the metric names of docs/metrics.md; progress and notes go to stderr. Real processes, so what a
shell pipe (``dmlkit ... --json | jq``) would read is what is checked."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from dmlkit.cli.app import app
from dmlkit.cli.json_output import emit
from dmlkit.evaluation import evaluate

TINY = ["digits-smoke", "--set", "train.epochs=1", "--set", "train.batches_per_epoch=3",
        "--set", "eval.nmi=false"]


def dmlkit(cwd, *args, ok=True):
    """``python -m dmlkit ARGS`` as a shell would run it: (stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    res = subprocess.run([sys.executable, "-m", "dmlkit", *map(str, args)], cwd=cwd, env=env,
                         text=True, capture_output=True, timeout=300)
    assert (res.returncode == 0) == ok, res.stderr[-2000:]
    return res.stdout, res.stderr


def one_document(stdout: str) -> dict:
    """The whole of stdout is one JSON object (json.loads fails on anything around it)."""
    doc = json.loads(stdout)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("json")
    out, err = dmlkit(root, "train", *TINY, "--set", f"run.root={root}", "--set", "run.name=t",
                      "--json")
    return root, one_document(out), err


def test_train_json_is_metrics_json_and_progress_goes_to_stderr(trained):
    root, doc, err = trained
    assert doc["run_dir"] == str(root / "t")
    saved = json.loads((root / "t" / "metrics.json").read_text())
    assert {k: v for k, v in doc.items() if k not in ("run_dir", "schema_version")} == saved
    assert {"map_at_r", "precision_at_1", "r_precision"} <= doc["final"].keys()
    assert "run directory:" in err and "test metrics" not in err


def test_evaluate_and_reproduce_json(trained):
    root, doc, _ = trained
    out, _ = dmlkit(root, "evaluate", root / "t", "--json")
    ev = one_document(out)
    assert ev["run_dir"] == str(root / "t")
    assert ev["metrics"]["map_at_r"] == pytest.approx(doc["final"]["map_at_r"], abs=1e-6)
    out, _ = dmlkit(root, "reproduce", root / "t", "--json")
    rep = one_document(out)
    assert rep["original"] == doc["final"] and rep["run_dir"] == str(root / "t-reproduced")
    assert rep["reproduced"].keys() == doc["final"].keys()


def test_evaluate_embeddings_json_equals_the_evaluator(tmp_path):
    rng = np.random.default_rng(0)
    emb, labels = rng.normal(size=(60, 8)).astype(np.float32), np.repeat(np.arange(6), 10)
    np.savez(tmp_path / "e.npz", embeddings=emb, labels=labels)
    out, err = dmlkit(tmp_path, "evaluate-embeddings", tmp_path / "e.npz", "--per-class",
                      "--json")
    doc = one_document(out)
    expected = evaluate(emb, labels, normalize=True, per_class=True)  # the command's defaults
    by_class = expected.pop("per_class")
    assert doc["queries"] == 60 and doc["metrics"] == pytest.approx(expected)
    assert sorted(doc["per_class"]) == [str(c) for c in range(6)]
    assert doc["per_class"]["0"] == pytest.approx(by_class[0])
    assert err == ""


def test_listings_json():
    runner = CliRunner()
    presets = json.loads(runner.invoke(app, ["presets", "--json"]).stdout)["presets"]
    assert {"name": "digits-smoke", "description": presets[[p["name"] for p in presets].index(
        "digits-smoke")]["description"]} in presets and all(p["description"] for p in presets)
    datasets = json.loads(runner.invoke(app, ["datasets", "--json"]).stdout)["datasets"]
    assert {"digits", "cub200", "cifar10"} <= {d["name"] for d in datasets}
    digits = json.loads(runner.invoke(app, ["datasets", "--describe", "digits", "--json"]).stdout)
    assert digits["dataset"] == "digits"


def test_nan_becomes_null_and_numpy_becomes_numbers(capsys):
    emit({"map_at_r": float("nan"), "n": np.int64(3), "x": np.float32(0.5),
          "v": np.arange(2), "inf": [float("inf")]})
    assert json.loads(capsys.readouterr().out) == {"schema_version": 1, "map_at_r": None,
                                                  "n": 3, "x": 0.5, "v": [0, 1], "inf": [None]}
