import io
import json
import re
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from typer.testing import CliRunner

from dmlkit.base.files import load_weights
from dmlkit.base.run_dir import RunDir
from dmlkit.cli.app import app
from dmlkit.engine.interrupt import TrainingInterrupted
from dmlkit.errors import ConfigError
from dmlkit.evaluation import evaluate
from dmlkit.evaluation.extract import extract_embeddings
from dmlkit.protocol import benchmark as bm
from dmlkit.protocol.benchmark_config import (
    BenchmarkConfig,
    benchmark_names,
    load_benchmark_config,
)
from dmlkit.protocol.benchmark_progress import BenchmarkProgress
from dmlkit.protocol.final import EMBEDDINGS, eval_options
from dmlkit.serve.load import load_run
from numeric import assert_whole_close


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def tiny(tmp_path, **changes):
    data = {
        "name": "tiny", "output": str(tmp_path / "bench"), "folds": 2, "seeds": 2, "trials": 2,
        "prune_after": None,
        "set": {"train.m_per_class": 12, "train.epochs": 2, "train.batches_per_epoch": 3,
                "eval.nmi": False, "eval.evaluate_untrained": True},
        "methods": {"triplet": {
            "preset": "digits-smoke",
            "search": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}},
        "report": {"map_points": 40, "gallery_queries": 2, "gallery_k": 3},
    }
    return BenchmarkConfig.model_validate({**data, **changes})


@pytest.fixture
def counted(monkeypatch):
    """Count the runs actually trained (not reused)."""
    calls = []

    def counting(cfg, resume=None, console=None):
        calls.append(resume if cfg is None else cfg.run.name)
        return train(cfg, resume=resume, console=console)

    train = bm.train
    monkeypatch.setattr(bm, "train", counting)
    return calls


def test_fold_configs_apply_protocol_keys_in_order(tmp_path):
    bench = tiny(tmp_path, budget="fashion-mnist-cv",
                 set={"train.epochs": 1, "train.batch_size": 48})
    bench.methods["triplet"].overrides["train.batch_size"] = 36
    cfg = bm.method_config(bench, "triplet", {"optim.lr": 0.005}, 1, 3)
    assert cfg.data.name == "fashion-mnist"  # budget over the method's preset
    assert cfg.train.epochs == 1 and cfg.train.batch_size == 36  # set < method overrides
    assert cfg.optim.lr == 0.005 and cfg.data.folds == 2 and cfg.data.fold == 1
    assert cfg.train.seed == 3 and cfg.data.val_fraction == 0.0
    assert cfg.run.name == f"fold1-{bm.config_hash(cfg)[:12]}"
    other = bm.method_config(bench, "triplet", {"optim.lr": 0.004}, 1, 3)
    assert other.run.name != cfg.run.name and other.run.root == cfg.run.root


def test_interrupted_study_resumes_and_final_reuses_search_runs(tmp_path, counted):
    out = tmp_path / "bench"
    bm.run_benchmark(tiny(tmp_path, trials=1), stage="search")
    assert len(counted) == 2  # one trial, two folds
    bench = tiny(tmp_path)
    bm.run_benchmark(bench, stage="search")
    assert len(counted) == 4  # only the one new trial ran
    study = optuna.load_study(study_name="tiny/triplet", storage=bench.storage_url)
    assert len(study.trials) == 2

    counted.clear()
    bm.run_benchmark(bench)  # search has nothing left; final trains seed 1 only
    assert len(counted) == 2 and all(n.startswith("fold") for n in counted)
    results = json.loads((out / "results.json").read_text())
    r = results["methods"]["triplet"]
    records = results["records"]
    best = study.best_trial
    assert r["search"]["best_trial"] == best.number and r["final"]["params"] == best.params
    assert r["final"]["trial"] == best.number
    seed0 = [str(out / p) for p in r["final"]["runs"]]
    assert seed0 == [str(out / "triplet" / bm.method_config(bench, "triplet", best.params, k,
                                                                0).run.name) for k in (0, 1)]
    assert best.value == pytest.approx(
        sum(bm.validation_score(RunDir(Path(p))) for p in seed0) / 2)
    # one search record per trial and fold, with its validation metrics and provenance
    search = [x for x in records if x["stage"] == "search"]
    assert sorted((x["trial"], x["fold"]) for x in search) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(len(x["config_hash"]) == 64 and x["train_s"] > 0 for x in search)
    assert results["environment"]["torch"] == torch.__version__
    assert "git_commit" in results["environment"] and "cpu_capability" in results["environment"]

    def final(seed, fold, stage="final"):
        (hit,) = [x for x in records
                  if (x["stage"], x["seed"], x["fold"]) == (stage, seed, fold)]
        return hit["metrics"]

    # separated: every fold model alone; concatenated: the normalized embeddings side by side
    embs = []
    for k, path in enumerate(seed0):
        run = load_run(path, "best.safetensors")
        assert "final" not in RunDir(Path(path)).read_json("metrics.json")  # no own test
        assert final(0, k) == pytest.approx(
            {k: v for k, v in run.evaluate_test().items() if isinstance(v, float)})
        q, labels = extract_embeddings(run.model, run.data.test.query)
        embs.append(F.normalize(q, dim=1))
    options = eval_options(run.cfg.eval)
    whole = evaluate(torch.cat(embs, 1), labels, **options)
    assert final(0, None) == pytest.approx({k: v for k, v in whole.items()
                                            if isinstance(v, float)})
    assert {x["seed"] for x in records if x["stage"] == "final"} == {0, 1}
    # the untrained anchor of every seed: each fold model exactly as it started training
    cfg = bm.method_config(bench, "triplet", best.params, 1, 1)
    cfg.eval.test, cfg.run.root = True, str(tmp_path / "check")
    start = bm.train(cfg).read_json("metrics.json")["untrained"]
    assert final(1, 1, "untrained") == pytest.approx(
        {k: v for k, v in start.items() if isinstance(v, float)})
    assert final(1, None, "untrained")["map_at_r"] > 0
    saved = load_weights(out / "triplet" / EMBEDDINGS)
    assert_whole_close(saved["embeddings"], torch.cat(embs, 1))

    for name in ("report.md", "report.html", "figures/learning-curves.png",
                 "figures/embedding-map.png", "figures/gallery-triplet.png"):
        assert (out / name).stat().st_size > 500
    report = (out / "report.md").read_text()
    assert "| triplet |" in report and "untrained concat." in report

    counted.clear()  # the CLI re-runs nothing and rewrites the report
    (out / "report.md").unlink()
    result = CliRunner().invoke(app, ["benchmark", str(_write(tmp_path, bench)),
                                      "--stage", "report"])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file() and counted == []


def _write(tmp_path, bench):
    path = tmp_path / "bench.yaml"
    path.write_text(json.dumps(bench.model_dump(mode="json")))  # JSON is YAML
    return path


def test_cut_short_run_resumes_from_its_checkpoint(tmp_path, counted):
    cfg = bm.method_config(tiny(tmp_path), "triplet", {"optim.lr": 1e-3}, 0, 0)
    run = bm.run_or_reuse(cfg)
    full = run.read_json("metrics.json")
    (run.path / "metrics.json").unlink()
    for name in ("state-0002.pt", "model-0002.safetensors"):
        (run.checkpoints / name).unlink()
    again = bm.run_or_reuse(cfg)
    assert counted == [cfg.run.name, run.path]  # trained, then resumed (not restarted)
    assert again.read_json("metrics.json")["best_val"] == full["best_val"]
    assert bm.run_or_reuse(cfg).path == run.path and len(counted) == 2


def test_search_without_validation_is_a_config_error(tmp_path):
    bench = tiny(tmp_path, set={"train.eval_every": 0})
    with pytest.raises(ConfigError, match="eval_every"):
        bm.run_benchmark(bench, stage="search")


@pytest.mark.parametrize(("change", "message"), [
    ({"methods": {"a/b": {"preset": "digits-smoke"}}}, "method names"),
    ({"methods": {}}, "methods"),
    ({"folds": 1}, "folds"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"methods": {"a": {"preset": "digits-smoke", "baseline": "b"}}}, "must name another"),
])
def test_bad_benchmark_files_are_config_errors(tmp_path, change, message):
    path = tmp_path / "b.yaml"
    data = tiny(tmp_path).model_dump(mode="json") | change
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        load_benchmark_config(str(path))


@pytest.mark.parametrize("name, count, dataset, budget", [
    ("fashion-mnist-cpu", 7, "fashion-mnist", "fashion-mnist-cv"),
    ("cifar10-cpu", 5, "cifar10-jpeg", "cifar10-cv"),
    ("cifar10-frozen", 7, "cifar10-jpeg", "cifar10-frozen-cv"),
    ("digits-mdr", 3, "digits", "digits-cv")])
def test_shipped_benchmarks_load_and_resolve(tmp_path, name, count, dataset, budget):
    assert name in benchmark_names()
    with pytest.raises(ConfigError, match="fashion-mnist-cpu"):
        load_benchmark_config("no-such-benchmark")
    bench = load_benchmark_config(name)
    assert len(bench.methods) == count and bench.budget == budget and bench.seeds >= 5
    for spec in bench.methods.values():  # a declared baseline is another method of the file
        assert spec.baseline in (None, *bench.methods)
    for method, spec in bench.methods.items():  # every method's fold config validates
        cfg = bm.method_config(bench, method, {}, 1, 0)
        assert cfg.data.name == dataset and cfg.data.protocol == "zero_shot"
        frozen = name == "cifar10-frozen"
        assert cfg.model.freeze_backbone == frozen and cfg.model.pretrained == frozen
        assert not (frozen and cfg.data.stream_transforms)  # refused on cached features
        # a one-stream method cannot name a second stream's transform (refused at training)
        assert not (cfg.method.label == "metric" and cfg.data.stream_transforms)
        assert cfg.train.batch_size // cfg.train.m_per_class <= 2  # a fold trains on 2 classes
        assert set(spec.search) >= {"optim.lr"}


@pytest.mark.slow
def test_benchmark_runs_are_logged_one_per_training_run_grouped_by_study(tmp_path):
    """MLflow: experiment = benchmark, a parent run per method's study, a child run per trained
    run (search folds and final models) in one mlflow.db; TensorBoard: a folder per run."""
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient

    from dmlkit.engine.tracking.mlflow_logger import GROUP_TAG, PARENT_TAG, RUN_DIR_TAG

    base = tiny(tmp_path)
    bench = tiny(tmp_path, trials=1, seeds=2,
                 set={**base.set, "run.loggers": ["mlflow", "tensorboard"]})
    bm.run_benchmark(bench)
    out = tmp_path / "bench"
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    [parent] = [r for r in runs if GROUP_TAG in r.data.tags]
    assert parent.data.tags[GROUP_TAG] == "tiny/triplet"
    children = [r for r in runs if GROUP_TAG not in r.data.tags]
    trained = sorted(p.resolve() for p in (out / "triplet").glob("fold*"))
    assert len(trained) == 4  # 1 trial x 2 folds (also final seed 0) + final seed 1 x 2 folds
    assert sorted(r.data.tags[RUN_DIR_TAG] for r in children) == [str(p) for p in trained]
    assert {r.data.tags[PARENT_TAG] for r in children} == {parent.info.run_id}
    for run, path in ((r, Path(r.data.tags[RUN_DIR_TAG])) for r in children):
        best = json.loads((path / "metrics.json").read_text())["best_val"]["map_at_r"]
        assert run.data.metrics["best_val/map_at_r"] == pytest.approx(best, rel=1e-12)
        assert (path / "tensorboard").is_dir()


def test_search_key_typo_fails_before_any_trial(tmp_path, counted):
    bench = tiny(tmp_path)
    bench.methods["triplet"].search["optim.lrr"] = bench.methods["triplet"].search["optim.lr"]
    with pytest.raises(ConfigError, match=re.escape(
            "benchmark method triplet, search key 'optim.lrr': config: unknown key 'optim.lrr'")):
        bm.run_benchmark(bench)
    assert counted == [] and not (tmp_path / "bench").exists()  # no study, no trial


def test_report_folder_is_relative_to_the_benchmark_file(tmp_path):
    data = tiny(tmp_path).model_dump(mode="json")
    data["report"]["folder"] = "rep"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text(json.dumps(data))
    assert load_benchmark_config(str(tmp_path / "sub" / "b.yaml")).report.folder == str(
        tmp_path / "sub" / "rep")
    for name in benchmark_names():  # shipped files write into their output folder
        assert load_benchmark_config(name).report.folder is None


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), TrainingInterrupted(
    "stopped by SIGTERM at epoch 1; continue with: dmlkit train --resume runs/x", 15)])
def test_interrupted_benchmark_says_to_run_it_again(tmp_path, monkeypatch, stop):
    def interrupted(*args):
        raise stop

    monkeypatch.setattr(bm, "run_benchmark", interrupted)
    path = str(_write(tmp_path, tiny(tmp_path)))
    res = CliRunner().invoke(app, ["benchmark", path, "--stage", "search"])
    name = "SIGINT" if isinstance(stop, KeyboardInterrupt) else "SIGTERM"
    assert res.exit_code == 128 + (2 if name == "SIGINT" else 15)
    assert res.output.strip().splitlines() == [
        f"stopped by {name}; finished trials and runs are kept and a cut run resumes from its "
        f"checkpoint: continue with: dmlkit benchmark {path} --stage search"]


def test_progress_counts_runs_pruned_folds_and_eta():
    out = io.StringIO()
    progress = BenchmarkProgress(6, Console(file=out, width=200))
    progress.skip(2)  # a trial finished in an earlier session
    progress.run_done("m: search, fold 1/2", 10.0, trained=True)
    progress.trial_done(2)  # pruned after fold 1: fold 2 never runs
    progress.run_done("m: final, fold 1/2", 0.0, trained=False)
    assert progress.done == 5
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[3/6] m: search, fold 1/2 (10 s); elapsed ")
    assert lines[0].endswith("ETA 30s")  # 3 runs left x 10 s
    assert lines[1].startswith("[5/6] m: final, fold 1/2 (reused)") and lines[1].endswith("10s")


@pytest.mark.slow
def test_benchmark_json_is_the_results_file(tmp_path):
    path = str(_write(tmp_path, tiny(tmp_path, trials=1, seeds=1)))
    res = CliRunner().invoke(app, ["benchmark", path, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # progress went to stderr: stdout is the document alone
    assert doc["benchmark"] == "tiny" and doc["stage"] == "all"
    assert doc["results"] == json.loads((tmp_path / "bench" / "results.json").read_text())
    assert Path(doc["report"]["markdown"]).is_file() and Path(doc["report"]["html"]).is_file()
    res = CliRunner().invoke(app, ["benchmark", path, "--stage", "search", "--json"])
    assert json.loads(res.stdout) == {"schema_version": doc["schema_version"],
                                      "benchmark": "tiny", "stage": "search",
                                      "storage": doc["storage"]}


def test_frozen_backbone_features_are_computed_once_per_benchmark(tmp_path, monkeypatch):
    """Two methods on one frozen backbone share ``<output>/cache``: the search computes each
    image set's features once, the final stage (retraining, fold-model test, untrained and
    pretrained-features anchors) reads them all back, and the report shows the anchor."""
    from dmlkit.engine import feature_cache

    computed = []
    extract = feature_cache.extract_embeddings

    def counting(backbone, dataset, *args, **kwargs):
        computed.append(len(dataset))
        return extract(backbone, dataset, *args, **kwargs)

    monkeypatch.setattr(feature_cache, "extract_embeddings", counting)
    frozen = {**tiny(tmp_path).set, "model.freeze_backbone": True}
    bench = tiny(tmp_path, seeds=1, trials=1, set=frozen, methods={
        "linear": {"preset": "digits-smoke"},
        "mlp": {"preset": "digits-smoke", "overrides": {"model.head.hidden": 16}}})
    out = tmp_path / "bench"
    bm.run_benchmark(bench, stage="search")
    files = sorted((out / "cache" / "features").iterdir())
    assert len(computed) == len(files) >= 2  # each image set once, whichever method asked
    assert not (out / "linear" / "cache").exists() and not (out / "mlp" / "cache").exists()
    searched = len(computed)
    bm.run_benchmark(bench)
    assert len(computed) == searched  # the final stage touched no image
    results = json.loads((out / "results.json").read_text())
    anchors = [x["metrics"] for x in results["records"] if x["stage"] == "pretrained"]
    assert len(anchors) == 2 and anchors[0] == anchors[1] and 0 < anchors[0]["map_at_r"] <= 1
    report = (out / "report.md").read_text()
    assert "pretrained features" in report
    assert f"{anchors[0]['map_at_r']:.3f}" in report
