"""Several search workers on one study: the trial budget is exact, a killed worker's trial is
retried, on SQLite and on a real PostgreSQL (``DMLKIT_TEST_POSTGRES_URL``, set by .ci/run)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from dmlkit.protocol.search import FINISHED, with_psycopg

POSTGRES = os.environ.get("DMLKIT_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    if not POSTGRES:
        pytest.skip("no PostgreSQL server: set DMLKIT_TEST_POSTGRES_URL (.ci/run starts one)")
    return with_psycopg(POSTGRES)  # the test's own Optuna reads it too (SQLAlchemy 2.0: psycopg2)


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


WORKER = textwrap.dedent("""
    import sys, time
    import optuna
    from dmlkit.protocol.search import ParamSpec, cross_validation_objective, open_study, optimize
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
    space = {"x": ParamSpec(type="float", low=0.0, high=1.0)}
    study = open_study(name, storage, "random", 0, worker, prune_after=None)
    def score(params, fold):
        time.sleep(0.3)
        return params["x"]
    print(optimize(study, cross_validation_objective(score, 1, space), 6, space, poll_s=0.2))
""")


def test_two_workers_finish_exactly_the_budget(storage):
    name = f"w-{uuid.uuid4().hex[:8]}"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, storage, name, str(w)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env()) for w in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6  # none extra, none lost
    assert sum(int(o[0].split()[-1]) for o in outs) == 6  # each ran by exactly one worker
    assert len({t.params["x"] for t in study.trials}) == 6


def _bench(tmp_path, name, batches=3):
    """A 2-trial, 2-fold search on digits; a trial trains 2 x ``batches`` batches per fold."""
    bench = {
        "name": name, "output": str(tmp_path / "bench"), "folds": 2, "seeds": 1, "trials": 2,
        "prune_after": None, "sampler": "random", "heartbeat_s": 1, "grace_s": 3,
        "set": {"train.m_per_class": 12, "train.epochs": 2, "train.batches_per_epoch": batches,
                "eval.nmi": False, "eval.evaluate_untrained": False},
        "methods": {"triplet": {
            "preset": "digits-smoke",
            "search": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}},
    }
    path = tmp_path / "bench.yaml"
    path.write_text(json.dumps(bench))  # JSON is YAML
    return path


def _worker(path, storage, worker):
    return subprocess.Popen(
        [sys.executable, "-m", "dmlkit", "benchmark", str(path), "--stage", "search",
         "--storage", storage, "--worker", str(worker)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_killed_worker_is_restarted_and_the_study_finishes_exactly(tmp_path, storage):
    """``dmlkit benchmark --stage search`` workers: SIGKILL one mid-trial, restart it beside a
    second worker; the killed trial is failed (stale heartbeat) and retried once with its
    parameters, and exactly ``trials`` trials finish."""
    name = f"b-{uuid.uuid4().hex[:8]}"
    path = _bench(tmp_path, name, batches=150)  # trials of several seconds: killed mid-trial
    first = _worker(path, storage, 0)
    study_name, deadline = f"{name}/triplet", time.monotonic() + 120
    running = []
    while not running:  # a trial that has drawn its parameters and is training
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            continue
        running = [t for t in study.trials if t.state == TrialState.RUNNING and t.params]
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = optuna.load_study(study_name=study_name, storage=storage).trials[running[0].number]
    assert killed.state == TrialState.RUNNING  # precondition: the kill landed mid-trial
    workers = [_worker(path, storage, 0), _worker(path, storage, 1)]
    outs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[-3000:] for o in outs]

    trials = optuna.load_study(study_name=study_name, storage=storage).trials
    assert sum(t.state in FINISHED for t in trials) == 2  # no overshoot, none lost
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [running[0].number]  # the killed trial
    retries = [t for t in trials if "retry_of" in t.user_attrs]
    assert [(t.user_attrs["retry_of"], t.params, t.state in FINISHED) for t in retries] == [
        (running[0].number, running[0].params, True)]
    assert len(trials) == 3
