import time

import optuna
import pytest
from optuna.trial import TrialState

from dmlkit.engine.interrupt import TrainingInterrupted
from dmlkit.errors import ConfigError, TrainingError
from dmlkit.protocol.search import (
    ParamSpec,
    cross_validation_objective,
    finished_trials,
    open_study,
    optimize,
    storage_of,
    suggest_params,
)

SPACE = {"x": ParamSpec(type="float", low=0.0, high=1.0)}


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.mark.parametrize("spec", [
    {"type": "float", "low": 1.0, "high": 1.0},
    {"type": "float", "low": 0.0, "high": 1.0, "log": True},
    {"type": "int", "low": 1.5, "high": 4},
    {"type": "categorical"},
    {"type": "categorical", "choices": [1, 2], "low": 0.0},
    {"type": "float", "low": 0.0},
    {"type": "float", "low": 0.0, "high": 1.0, "unknown": 3},
    {"type": "categorical", "choices": [[1, 2]]},
])
def test_param_spec_rejects_inconsistent_ranges(spec):
    with pytest.raises(ValueError):
        ParamSpec(**spec)


def test_suggest_params_draws_every_type_within_its_range():
    space = {"a": ParamSpec(type="float", low=1e-4, high=1e-1, log=True),
             "b": ParamSpec(type="int", low=2, high=8, step=2),
             "c": ParamSpec(type="categorical", choices=["x", "y", None])}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        p = suggest_params(study.ask(), space)
        assert 1e-4 <= p["a"] <= 1e-1 and p["b"] in (2, 4, 6, 8) and p["c"] in ("x", "y", None)
        assert isinstance(p["b"], int)


def test_objective_is_the_mean_over_folds_and_records_fold_scores(tmp_path):
    calls = []

    def score(params, fold):
        calls.append(fold)
        return params["x"] + fold

    study = open_study("s", storage(tmp_path), prune_after=None)
    study.enqueue_trial({"x": 0.25})
    assert optimize(study, cross_validation_objective(score, 3, SPACE), 1, SPACE) == 1
    t = study.trials[0]
    assert calls == [0, 1, 2] and t.value == pytest.approx(1.25)
    assert t.user_attrs["fold_scores"] == [0.25, 1.25, 2.25]
    assert t.intermediate_values == {0: 0.25, 1: 0.75, 2: 1.25}  # running means


def test_resumed_study_runs_only_the_missing_trials(tmp_path):
    calls = []

    def score(params, fold):
        calls.append((params["x"], fold))
        return params["x"]

    objective = cross_validation_objective(score, 2, SPACE)
    first = open_study("s", storage(tmp_path))
    assert optimize(first, objective, 2, SPACE) == 2 and len(calls) == 4
    again = open_study("s", storage(tmp_path))  # a new process: load_if_exists
    assert optimize(again, objective, 2, SPACE) == 0 and len(calls) == 4
    more = open_study("s", storage(tmp_path))
    assert optimize(more, objective, 5, SPACE) == 3 and finished_trials(more) == 5
    xs = [t.params["x"] for t in more.trials]
    assert len(set(xs)) == 5  # the resumed sampler does not replay earlier draws


def test_sampler_is_seeded_and_workers_differ(tmp_path):
    def draws(name, worker, seed=0):
        study = open_study(name, storage(tmp_path), seed=seed, worker=worker)
        optimize(study, cross_validation_objective(lambda p, k: p["x"], 1, SPACE), 3, SPACE)
        return [t.params["x"] for t in study.trials]

    assert draws("a", 0) == draws("b", 0)
    assert draws("c", 0) != draws("d", 1)
    assert draws("e", 0) != draws("f", 0, seed=1)


def test_poor_trials_are_pruned_after_their_first_fold(tmp_path):
    calls = []

    def score(params, fold):
        calls.append((params["x"], fold))
        return params["x"]

    study = open_study("s", storage(tmp_path), prune_after=1)
    for x in (0.5, 0.9, 0.1):
        study.enqueue_trial({"x": x})
    optimize(study, cross_validation_objective(score, 3, SPACE), 3, SPACE)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert (0.1, 1) not in calls and (0.1, 0) in calls
    assert finished_trials(study) == 3


def test_training_error_prunes_the_trial_and_the_search_goes_on(tmp_path):
    def score(params, fold):
        if params["x"] > 0.5:
            raise TrainingError("non-finite loss")
        return params["x"]

    study = open_study("s", storage(tmp_path), prune_after=None)
    for x in (0.9, 0.2):
        study.enqueue_trial({"x": x})
    optimize(study, cross_validation_objective(score, 2, SPACE), 2, SPACE)
    first, second = study.trials
    assert first.state == TrialState.PRUNED and "non-finite" in first.user_attrs["error"]
    assert second.state == TrialState.COMPLETE and study.best_value == 0.2


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), TrainingInterrupted("stopped", 2)])
def test_interrupted_trial_is_retried_once_with_its_parameters(tmp_path, stop, capfd):
    calls = []

    def interrupted(params, fold):
        calls.append((params["x"], fold))
        if fold == 1:
            raise stop
        return params["x"]

    study = open_study("s", storage(tmp_path), prune_after=None)
    with pytest.raises(type(stop)):
        optimize(study, cross_validation_objective(interrupted, 2, SPACE), 2, SPACE)
    x = study.trials[0].params["x"]
    assert study.trials[0].state == TrialState.FAIL
    assert capfd.readouterr().err == ""  # no Optuna traceback before the caller's one line

    def score(params, fold):
        calls.append((params["x"], fold))
        return params["x"]

    again = open_study("s", storage(tmp_path), prune_after=None)
    assert optimize(again, cross_validation_objective(score, 2, SPACE), 2, SPACE) == 2
    retry = again.trials[1]
    assert retry.params["x"] == x and retry.user_attrs["retry_of"] == 0
    assert calls[:4] == [(x, 0), (x, 1), (x, 0), (x, 1)]
    assert finished_trials(again) == 2 and len(again.trials) == 3


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_stale_running_trial_is_failed_and_retried(tmp_path):
    study = open_study("s", storage(tmp_path), prune_after=None, heartbeat_s=1, grace_s=1)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    storage_of(study).record_heartbeat(trial._trial_id)  # a worker that died mid-trial
    time.sleep(2.2)
    again = open_study("s", storage(tmp_path), prune_after=None, heartbeat_s=1, grace_s=1)
    optimize(again, cross_validation_objective(lambda p, k: p["x"], 1, SPACE), 1, SPACE)
    states = [t.state for t in again.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]
    assert again.trials[1].params == trial.params


def test_unreachable_storage_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="storage"):
        open_study("s", "nosuchdialect://x/y")
