"""Runs written before composed methods (config version 1, tests/fixtures/runs_v1) train to the
same results with the composed method: {} == metric, {mdr} == mdr, {sharing} == sharing,
{guided} == guided (same seed; exact on the machine that wrote them. On another CPU's kernels, e.g.
ATEN_CPU_CAPABILITY=default, Guided's master training moves the student's loss by ~3e-4
relative and a near tie in the ranking may flip: the tolerances below.)"""

import csv
from pathlib import Path

import pytest

from dmlkit import config
from dmlkit.base.run_dir import RunDir
from dmlkit.engine.train import train
from numeric import assert_whole_close

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs_v1"
# NMI / AMI come from a k-means clustering (faiss) whose assignments flip with tiny changes of
# the embeddings or of faiss's OpenMP thread count: in a CI run (2 threads, a CPU hog beside
# it) NMI moved by 0.07 while every ranking metric stayed within 0.03. The loss and the
# ranking metrics pin the equivalence.
CLUSTERING = {"nmi", "ami"}
PARTS = {"metric": None, "mdr": "mdr", "sharing": "sharing", "guided": "guided"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(PARTS))
def test_v1_config_migrates_to_its_part(name):
    cfg = config.load(str(FIXTURES / name / "config.yaml"))
    on = [k for k, v in cfg.method.parts if v is not None]
    assert cfg.version == config.CONFIG_VERSION and on == ([PARTS[name]] if PARTS[name] else [])
    assert cfg.method.loss_weight == (0.0 if name == "guided" else 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARTS))
def test_v1_run_retrains_to_the_same_results(name, tmp_path):
    expected = RunDir(FIXTURES / name).read_json("metrics.json")
    cfg = config.load(str(FIXTURES / name / "config.yaml"), [f"run.root={tmp_path}"])
    run = train(cfg)
    got = run.read_json("metrics.json")
    with (run.path / "metrics.csv").open() as f:
        (row,) = csv.DictReader(f)
    # a whole run retrained: the epoch's mean loss, 2e-3 of itself (another machine's kernels)
    assert_whole_close(float(row["train_loss"]), expected["train_loss"], rel=2e-3)
    finals = sorted(k for k in expected if k.startswith("final"))
    assert finals == sorted(k for k in got if k.startswith("final"))
    for k in finals:
        assert expected[k].keys() == got[k].keys()
        for metric, value in expected[k].items():  # a flipped near tie moves a metric ~1/60
            if metric in CLUSTERING:
                continue
            assert got[k][metric] == pytest.approx(value, abs=0.03), (k, metric)
