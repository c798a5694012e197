"""Hyperparameter search with Optuna: a declared space, a cross-validated objective, pruning,
and a study stored in a database so that it can be interrupted, resumed and shared.

- The space maps dotted config keys to `ParamSpec` (float / int / categorical).
- The objective of a trial is the mean over folds of a per-fold score (validation MAP@R);
  after fold k the mean of folds 0..k is reported, and the pruner (median rule) may stop the
  trial there.
- A run that raises `TrainingError` (e.g. a non-finite loss) prunes its trial: a diverging
  configuration is a bad one, not a broken search. A stop request (`TrainingInterrupted`,
  SIGINT/SIGTERM) is not: it fails the trial and ends the search.
- Storage is any SQLAlchemy URL (SQLite file by default; PostgreSQL / MySQL for several
  machines). Trials that already finished (complete or pruned) count toward ``trials`` and are
  not redone; trials that were interrupted (failed, or stale: no heartbeat for `GRACE_S`
  seconds) are retried once with the same parameters.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import optuna
from optuna.trial import TrialState
from pydantic import BaseModel, ConfigDict, model_validator
from sqlalchemy.exc import SQLAlchemyError

from dmlkit.engine.interrupt import TrainingInterrupted
from dmlkit.errors import ConfigError, TrainingError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_S = 60
GRACE_S = 180
RETRY_OF = "retry_of"


class ParamSpec(BaseModel):
    """One searched hyperparameter: a float or int range (``log``: log-uniform) or choices."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[bool | int | float | str | None] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter needs 'choices' (and no low/high)")
            return self
        if self.choices is not None or self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high' (and no choices)")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log-scale parameter needs low > 0 and no step")
        if self.type == "int" and not all(
            float(v).is_integer() for v in (self.low, self.high, self.step or 1)
        ):
            raise ValueError("an int parameter needs integer low, high and step")
        return self


def suggest_params(trial: optuna.Trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """One value per key of ``space``, drawn by the trial's sampler.

    >>> space = {"optim.lr": ParamSpec(type="float", low=1e-4, high=1e-2, log=True),
    ...          "train.m_per_class": ParamSpec(type="categorical", choices=[4, 8])}
    >>> suggest_params(optuna.trial.FixedTrial({"optim.lr": 1e-3, "train.m_per_class": 8}),
    ...                space)
    {'optim.lr': 0.001, 'train.m_per_class': 8}
    """
    out: dict[str, Any] = {}
    for key, s in space.items():
        if s.type == "float":
            out[key] = trial.suggest_float(key, s.low, s.high, log=s.log, step=s.step)
        elif s.type == "int":
            out[key] = trial.suggest_int(key, int(s.low), int(s.high), log=s.log,
                                         step=int(s.step or 1))
        else:
            out[key] = trial.suggest_categorical(key, s.choices)
    return out


def cross_validation_objective(
    score_fold: Callable[[dict[str, Any], int], float],
    folds: int,
    space: dict[str, ParamSpec],
) -> Callable[[optuna.Trial], float]:
    """Objective: mean over folds k = 0..K-1 of ``score_fold(params, k)``, reported per fold.

    The fold scores are kept in the trial's user attribute ``fold_scores``.
    """

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, space)
        scores: list[float] = []
        for k in range(folds):
            try:
                scores.append(float(score_fold(params, k)))
            except TrainingInterrupted:
                raise  # a stop request, not a bad configuration: the trial fails, is retried
            except TrainingError as e:
                trial.set_user_attr("error", str(e))
                raise optuna.TrialPruned(f"fold {k}: {e}") from None
            trial.set_user_attr("fold_scores", scores)
            trial.report(float(np.mean(scores)), k)
            if k < folds - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"mean validation score {np.mean(scores):.4f} after "
                                         f"fold {k} is below the median of earlier trials")
        return float(np.mean(scores))

    return objective


def make_sampler(kind: str, seed: int, startup_trials: int = 10) -> optuna.samplers.BaseSampler:
    """``tpe`` (Tree-structured Parzen Estimator, random for its first ``startup_trials``) or
    ``random``, seeded."""
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {kind!r}; choose tpe or random")


def open_study(
    name: str,
    storage: str,
    sampler: str = "tpe",
    seed: int = 0,
    worker: int = 0,
    prune_after: int | None = 5,
    startup_trials: int = 10,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
) -> optuna.Study:
    """Create or load (``load_if_exists``) the maximizing study ``name`` in ``storage``.

    The sampler is seeded by (``seed``, ``worker``, number of trials already stored), so a fresh
    study is reproducible, a resumed one does not replay the draws it already made, and workers
    sharing a study draw different points. ``prune_after``: completed trials before the median
    pruner acts (None: no pruning); ``startup_trials``: random trials before TPE models.
    """
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            store = optuna.storages.RDBStorage(storage, heartbeat_interval=heartbeat_s,
                                               grace_period=grace_s)
        except (ImportError, ValueError, SQLAlchemyError,
                optuna.exceptions.StorageInternalError) as e:
            raise ConfigError(f"cannot open the study storage {storage!r}: {e}") from None
    pruner = (optuna.pruners.NopPruner() if prune_after is None
              else optuna.pruners.MedianPruner(n_startup_trials=prune_after))
    study = optuna.create_study(storage=store, study_name=name, direction="maximize",
                                pruner=pruner, load_if_exists=True)
    state = np.random.SeedSequence([seed, worker, len(study.trials)]).generate_state(1)[0]
    study.sampler = make_sampler(sampler, int(state), startup_trials)
    return study


def finished_trials(study: optuna.Study) -> int:
    """Trials that count toward the budget: complete or pruned."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _retry_interrupted(study: optuna.Study, keys: set[str]) -> None:
    """Enqueue, once each, the parameters of trials that failed or went stale mid-way."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    for t in trials:
        if t.state == TrialState.FAIL and t.number not in retried and set(t.params) == keys:
            study.enqueue_trial(t.params, user_attrs={RETRY_OF: t.number})


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    trials: int,
    space: dict[str, ParamSpec],
    on_trial_end: Callable[[], None] | None = None,
) -> int:
    """Run trials until ``trials`` have finished in the study (all workers together);
    ``on_trial_end()`` after each. Optuna's own log lines (a traceback for every failed trial,
    e.g. one stopped by Ctrl-C) are silenced: the error itself reaches the caller.

    Returns how many trials this call finished.
    """
    _retry_interrupted(study, set(space))
    before = finished_trials(study)
    callbacks = [optuna.study.MaxTrialsCallback(trials, states=FINISHED)]
    if on_trial_end is not None:
        callbacks.append(lambda study, trial: on_trial_end())
    if before < trials:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            study.optimize(objective, n_trials=trials - before, callbacks=callbacks)
        finally:
            optuna.logging.set_verbosity(verbosity)
    return finished_trials(study) - before
