"""`run_benchmark`: each method of a benchmark file through search, final and report.

1. **search**: an Optuna study per method over its declared space; a trial trains one run per
   class-disjoint fold (``data.folds``/``data.fold``, ``train.seed=0``) and scores the mean of
   the runs' best validation MAP@R (early stopping: ``train.patience``).
2. **final**: the best trial's configuration is trained on every fold once per seed
   (``train.seed = 0..seeds-1``) and its (validation-selected) fold models are evaluated on
   the test classes, separated and concatenated (`dmlkit.protocol.final`).
3. **report**: ``results.json`` (one record per trained model and anchor:
   `dmlkit.protocol.records`), ``report.md`` and ``report.html`` in the output folder, and a
   copy of ``results.json`` beside the report when the report has its own folder.

Every run directory is named by its fold and a hash of its configuration
(``<output>/<method>/fold<k>-<hash>``): a run whose ``metrics.json`` exists is reused
(a resumed study, or the final seed 0, which is the best trial's own runs), and a run that
was cut short resumes from its last checkpoint. Search workers that draw the same parameters
share the run: one trains it, the others wait for it and reuse its score (`run_or_reuse`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import optuna
from rich.console import Console

from dmlkit import config as config_mod
from dmlkit.base.file_lock import file_lock
from dmlkit.base.files import save_weights
from dmlkit.base.run_dir import STATE_FILE, RunDir, environment
from dmlkit.base.secrets import mask_secrets
from dmlkit.config import Config, dotted
from dmlkit.engine.train import train
from dmlkit.errors import ConfigError, TrainingError
from dmlkit.protocol.benchmark_config import BenchmarkConfig
from dmlkit.protocol.benchmark_progress import BenchmarkProgress
from dmlkit.protocol.final import EMBEDDINGS, evaluate_anchors, evaluate_fold_models
from dmlkit.protocol.records import SCHEMA, dumps, provenance, record
from dmlkit.protocol.search import (
    FINISHED,
    cross_validation_objective,
    finished_trials,
    open_study,
    optimize,
)

Stage = Literal["all", "search", "final", "report"]
RESULTS = "results.json"
SEARCH_SEED = 0


def config_hash(cfg: Config) -> str:
    """sha256 of the configuration without its ``run`` section (where it is written)."""
    return cfg.digest(exclude=("run",))


def method_config(
    bench: BenchmarkConfig, method: str, params: dict[str, Any], fold: int, seed: int
) -> Config:
    """The run config of ``method`` with searched ``params`` on ``fold`` with ``seed``.

    Precedence: method preset < tracking defaults (MLflow experiment: the benchmark, parent
    run: the method's study, one database in the output folder) < ``budget`` preset <
    benchmark ``set`` < method ``overrides`` < ``params`` < protocol keys (the runs skip their
    own test evaluation: the final stage tests the selected models). Every method's
    runs share ``<output>/cache`` (frozen-backbone features are computed once per benchmark).
    """
    spec = bench.methods[method]
    budget = dotted(config_mod.load_raw(bench.budget)) if bench.budget else {}
    tracking = {"run.experiment": bench.name, "run.group": f"{bench.name}/{method}",
                "run.tracking_uri": f"sqlite:///{Path(bench.output).resolve() / 'mlflow.db'}"}
    keys = {**tracking, **budget, **bench.set, **spec.overrides, **params,
            "data.folds": bench.folds, "data.fold": fold, "data.val_fraction": 0.0,
            "eval.test": False, "train.seed": seed, "run.root": str(Path(bench.output) / method),
            "run.cache_dir": str(Path(bench.output) / "cache")}
    cfg = config_mod.load(spec.preset, [f"{k}={json.dumps(v)}" for k, v in keys.items()])
    cfg.run.name = f"fold{fold}-{config_hash(cfg)[:12]}"
    return cfg


def check_search_keys(bench: BenchmarkConfig) -> None:
    """Every method's overrides and search keys name real config keys (checked with each
    key at its lowest value or first choice), before any trial starts; one-line ConfigError
    naming the method and key otherwise."""
    for method, spec in bench.methods.items():
        for key, p in {"": None, **spec.search}.items():
            params = {} if p is None else {key: p.choices[0] if p.choices else p.low}
            try:
                method_config(bench, method, params, 0, SEARCH_SEED)
            except ConfigError as e:
                where = f"search key {key!r}" if key else "preset and overrides"
                raise ConfigError(f"benchmark method {method}, {where}: {e}") from None


RUNNING_POLL_S = 5.0
STALE_AFTER_S = 3600.0  # a run on another host with no file changed for this long: given up


def last_change(path: Path) -> float:
    """The newest modification time (epoch seconds) of a run directory and the files in it."""
    return max((p.stat().st_mtime for p in [path, *path.rglob("*")] if p.exists()),
               default=0.0)


def run_or_reuse(cfg: Config, console: Console | None = None,
                 trained: list[bool] | None = None) -> RunDir:
    """The finished run of ``cfg``: reused if done, resumed if cut short, else trained.

    Every process that wants the run takes its lock (``<root>/.<name>.lock``) first: workers
    that reach the same configuration train it once, the others wait for it and reuse it (a run
    still ``running`` under a process whose lock is not visible here, e.g. on another host, is
    waited for, while anything in its directory changes: after `STALE_AFTER_S` without a change
    a TrainingError says how to take it over). ``trained`` (if given) gets whether this call
    trained.
    """
    path = Path(cfg.run.root) / cfg.run.name
    with file_lock(path.with_name(f".{path.name}.lock")):
        while (path / STATE_FILE).is_file() and (now := RunDir(path).state()).state == "running":
            idle = time.time() - last_change(path)
            if now.elsewhere and idle > STALE_AFTER_S:
                raise TrainingError(
                    f"{path} is marked running ({now.message}), on another host, and nothing in "
                    f"it changed for {idle / 60:.0f} min: if that process is gone, continue it "
                    f"with dmlkit train --resume {path} --force, then run this again")
            time.sleep(RUNNING_POLL_S)
        reused = (path / "metrics.json").is_file()
        if reused:
            run = RunDir(path)
        elif (path / "config.yaml").is_file():
            run = train(None, resume=path, console=console)
        else:
            run = train(cfg, console=console)
    if trained is not None:
        trained.append(not reused)
    return run


def fold_run(cfg: Config, label: str, progress: BenchmarkProgress,
             console: Console | None = None) -> RunDir:
    """`run_or_reuse`, counted in ``progress``."""
    trained: list[bool] = []
    t0 = time.perf_counter()
    run = run_or_reuse(cfg, console, trained)
    progress.run_done(label, time.perf_counter() - t0, trained[0])
    return run


def validation_score(run: RunDir) -> float:
    """The run's best validation MAP@R (the search objective of one fold)."""
    best = run.read_json("metrics.json").get("best_val") or {}
    if best.get("map_at_r") is None:
        raise TrainingError(f"{run.path}: no finite validation MAP@R")
    return float(best["map_at_r"])


def bench_study(bench: BenchmarkConfig, method: str, storage: str, worker: int) -> optuna.Study:
    """The study ``<benchmark name>/<method>`` in ``storage``, with the benchmark's settings."""
    return open_study(f"{bench.name}/{method}", storage, bench.sampler, bench.seed, worker,
                      bench.prune_after, bench.startup_trials, bench.heartbeat_s, bench.grace_s)


def search_trials(bench: BenchmarkConfig, method: str) -> int:
    """Trials of the method's search; without a search space every trial is the same
    configuration: one is enough."""
    return bench.trials if bench.methods[method].search else 1


def search_method(
    bench: BenchmarkConfig, method: str, storage: str, worker: int = 0,
    console: Console | None = None, progress: BenchmarkProgress | None = None,
) -> optuna.Study:
    """Run (or continue) the method's study until ``bench.trials`` trials have finished."""
    spec = bench.methods[method]
    progress = progress or BenchmarkProgress(search_trials(bench, method) * bench.folds)
    if method_config(bench, method, {}, 0, SEARCH_SEED).train.eval_every < 1:
        raise ConfigError(f"method {method}: the search needs validation (train.eval_every >= 1)")
    study = bench_study(bench, method, storage, worker)
    trials = search_trials(bench, method)
    ended = [min(finished_trials(study), trials)]  # trials ended, for the progress lines
    progress.skip(ended[0] * bench.folds)

    def score_fold(params: dict[str, Any], fold: int) -> float:
        cfg = method_config(bench, method, params, fold, SEARCH_SEED)
        label = f"{method}: search trial {ended[0] + 1}/{trials}, fold {fold + 1}/{bench.folds}"
        return validation_score(fold_run(cfg, label, progress, console))

    def trial_end() -> None:
        ended[0] += 1
        progress.trial_done(bench.folds)

    objective = cross_validation_objective(score_fold, bench.folds, spec.search)
    optimize(study, objective, trials, spec.search, on_trial_end=trial_end)
    return study


def study_summary(study: optuna.Study) -> dict[str, Any]:
    """Counts, best trial, and every trial's state, value, parameters and fold scores."""
    trials = study.get_trials(deepcopy=False)
    history = [{"number": t.number, "state": t.state.name, "value": t.value,
                "params": t.params, "fold_scores": t.user_attrs.get("fold_scores", []),
                "seconds": t.duration.total_seconds() if t.duration else None}
               for t in trials]
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    try:
        best = study.best_trial
    except ValueError:
        best = None
    return {"counts": counts, "seconds": sum(h["seconds"] or 0.0 for h in history),
            "best_trial": None if best is None else best.number,
            "best_value": None if best is None else best.value,
            "best_params": None if best is None else best.params, "trials": history}


def train_seconds(run: RunDir) -> float:
    """The run's training time: the sum of its epochs' ``train_seconds``."""
    return round(sum(row.get("train_seconds", 0.0) for row in run.metrics_rows()), 3)


def search_records(bench: BenchmarkConfig, method: str, study: optuna.Study) -> list[dict]:
    """One record per fold run of every finished trial: its best validation metrics."""
    out = []
    for t in study.get_trials(deepcopy=False, states=FINISHED):
        for k in range(len(t.user_attrs.get("fold_scores", []))):
            cfg = method_config(bench, method, t.params, k, SEARCH_SEED)
            run = RunDir(Path(cfg.run.root) / cfg.run.name)
            if not (run.path / "metrics.json").is_file():
                continue
            best = run.read_json("metrics.json").get("best_val") or {}
            out.append(record(method, "search", SEARCH_SEED, k, best, trial=t.number,
                              config_hash=config_hash(cfg), train_s=train_seconds(run)))
    return out


def final_method(
    bench: BenchmarkConfig, method: str, study: optuna.Study, console: Console | None = None,
    progress: BenchmarkProgress | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Retrain the best trial's configuration per fold and seed; evaluate on the test classes.

    Returns the method's final summary (parameters, trial, seed-0 run folders relative to the
    output folder, seconds) and its records: per seed every fold model and the concatenated
    embedding (``final``), the same models at initialization (``untrained``) and, with a
    frozen backbone, its L2-normalized features tested as they are (``pretrained``). Writes
    the concatenated seed-0 test embeddings to ``<output>/<method>/`` (the report's figures).
    """
    try:
        best = study.best_trial
    except ValueError:
        raise TrainingError(f"method {method}: no search trial completed (not run, or all "
                            "pruned or failed); see the study in the benchmark's storage"
                            ) from None
    params = best.params
    progress = progress or BenchmarkProgress(bench.seeds * bench.folds)
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    seed0: list[str] = []
    for seed in range(bench.seeds):
        cfgs = [method_config(bench, method, params, k, seed) for k in range(bench.folds)]
        runs = [fold_run(cfg, f"{method}: final, seed {seed + 1}/{bench.seeds}, fold "
                         f"{k + 1}/{bench.folds}", progress, console)
                for k, cfg in enumerate(cfgs)]
        result, test = evaluate_fold_models([r.path for r in runs])
        if seed == 0:
            save_weights({"embeddings": test["embeddings"], "labels": test["labels"]},
                         Path(bench.output) / method / EMBEDDINGS)
            seed0 = [f"{method}/{cfg.run.name}" for cfg in cfgs]
        for k, (cfg, run) in enumerate(zip(cfgs, runs, strict=True)):
            records.append(record(method, "final", seed, k, result["separated"][k],
                                  trial=best.number, config_hash=config_hash(cfg),
                                  train_s=train_seconds(run)))
        records.append(record(method, "final", seed, None, result["concatenated"],
                              trial=best.number))
        anchors = evaluate_anchors(cfgs)
        untrained = anchors["untrained"]
        records += [record(method, "untrained", seed, k, m)
                    for k, m in enumerate(untrained["separated"])]
        records.append(record(method, "untrained", seed, None, untrained["concatenated"]))
        if "pretrained_features" in anchors:
            records.append(record(method, "pretrained", seed, None,
                                  anchors["pretrained_features"]))
    final = {"params": params, "trial": best.number, "runs": seed0,
             "seconds": time.perf_counter() - t0}
    return final, records


def run_benchmark(
    bench: BenchmarkConfig,
    stage: Stage = "all",
    storage: str | None = None,
    worker: int = 0,
    console: Console | None = None,
) -> Path:
    """Search and/or final for every method, then the report (in ``bench.report.folder``,
    default the output folder); returns the output folder.

    ``storage`` overrides ``bench.storage`` (default: ``<output>/optuna.db``). ``stage``:
    ``search`` only fills the studies (several machines can share one storage), ``final``
    needs finished studies, ``report`` rewrites the report from ``results.json``.
    """
    from dmlkit.protocol.report import write_report

    out = Path(bench.output)
    url = storage or bench.storage_url
    results_path = out / RESULTS
    t_start = time.time()
    if stage != "report":
        env = {**environment(bench.seed), **provenance()}  # "started": now
        check_search_keys(bench)
        out.mkdir(parents=True, exist_ok=True)
        total = sum(search_trials(bench, m) for m in bench.methods) if stage != "final" else 0
        total += 0 if stage == "search" else len(bench.methods) * bench.seeds
        progress = BenchmarkProgress(total * bench.folds, console)
        methods: dict[str, Any] = {}
        records: list[dict[str, Any]] = []
        for name, spec in bench.methods.items():
            if stage == "final":
                study = bench_study(bench, name, url, worker)
            else:
                study = search_method(bench, name, url, worker, console, progress)
            if stage == "search":
                continue
            dataset = method_config(bench, name, {}, 0, SEARCH_SEED).data.name
            final, method_records = final_method(bench, name, study, console, progress)
            methods[name] = {"preset": spec.preset, "dataset": dataset,
                             "baseline": spec.baseline, "overrides": spec.overrides,
                             "search_space": {k: v.model_dump() for k, v in spec.search.items()},
                             "search": study_summary(study), "final": final}
            records += search_records(bench, name, study) + method_records
        if stage == "search":
            return out
        results = {"schema": SCHEMA,
                   "benchmark": json.loads(mask_secrets(bench.model_dump_json())),
                   "environment": {**env, "wall_s": time.time() - t_start},
                   "methods": methods, "records": records}
        results_path.write_text(dumps(results))
    if not results_path.is_file():
        raise ConfigError(f"{results_path} does not exist: run the final stage first")
    results = json.loads(results_path.read_text())
    if results.get("schema") != SCHEMA:
        raise ConfigError(f"{results_path} was written by an older dmlkit (no per-model "
                          "records): run the final stage again (finished runs are reused)")
    folder = Path(bench.report.folder or out)
    folder.mkdir(parents=True, exist_ok=True)
    if folder.resolve() != out.resolve():  # the raw results go beside the report
        (folder / RESULTS).write_text(results_path.read_text())
    write_report(folder, results)
    return out
