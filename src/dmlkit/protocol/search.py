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
- The budget is exact with any number of workers: a worker starts a trial only while fewer
  than ``trials`` trials are finished or running, and it checks and creates the trial under a
  lock shared by all workers (`storage_lock`), so two workers never take the last slot.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
from optuna.trial import TrialState
from pydantic import BaseModel, ConfigDict, model_validator
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from dmlkit.base.file_lock import file_lock
from dmlkit.base.periodic import every
from dmlkit.base.secrets import mask_secrets
from dmlkit.engine.interrupt import TrainingInterrupted
from dmlkit.errors import ConfigError, TrainingError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TAKEN = (*FINISHED, TrialState.RUNNING)  # trials that hold a slot of the budget
HEARTBEAT_S = 60
GRACE_S = 180
_STORES: weakref.WeakKeyDictionary[optuna.Study, optuna.storages.RDBStorage] = (
    weakref.WeakKeyDictionary()
)  # each open_study's storage (see `storage_of`)
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


def with_psycopg(storage: str) -> str:
    """A bare ``postgresql://`` URL with the driver the ``[postgres]`` extra installs
    (psycopg 3): SQLAlchemy 2.0 maps a bare URL to psycopg2, 2.1 to psycopg.

    >>> with_psycopg("postgresql://u@h:5432/db"), with_psycopg("sqlite:///s.db")
    ('postgresql+psycopg://u@h:5432/db', 'sqlite:///s.db')
    """
    scheme, sep, rest = storage.partition("://")
    return f"postgresql+psycopg://{rest}" if sep and scheme == "postgresql" else storage


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
    storage = with_psycopg(storage)
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(2):
            try:
                store = optuna.storages.RDBStorage(storage, heartbeat_interval=heartbeat_s,
                                                   grace_period=grace_s)
                break
            except SQLAlchemyError as e:  # once: workers that create a new database together
                if attempt:
                    raise ConfigError(f"cannot open the study storage {mask_secrets(storage)!r}: "
                                      f"{mask_secrets(str(e).splitlines()[0])}") from None
                time.sleep(1.0)
            except (ImportError, ValueError, optuna.exceptions.StorageInternalError) as e:
                raise ConfigError(f"cannot open the study storage {mask_secrets(storage)!r}: "
                                  f"{mask_secrets(str(e))}") from None
    pruner = (optuna.pruners.NopPruner() if prune_after is None
              else optuna.pruners.MedianPruner(n_startup_trials=prune_after))
    study = optuna.create_study(storage=store, study_name=name, direction="maximize",
                                pruner=pruner, load_if_exists=True)
    _STORES[study] = store
    state = np.random.SeedSequence([seed, worker, len(study.trials)]).generate_state(1)[0]
    study.sampler = make_sampler(sampler, int(state), startup_trials)
    return study


def storage_of(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The storage `open_study` opened ``study`` with (None for a study opened otherwise):
    kept here rather than read from Optuna's private ``Study._storage``."""
    return _STORES.get(study)


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


@contextlib.contextmanager
def storage_lock(study: optuna.Study) -> Iterator[None]:
    """Hold a lock shared by every process that uses ``study``'s storage.

    PostgreSQL: a session advisory lock; MySQL: ``GET_LOCK``; SQLite: an exclusive ``flock``
    on ``<database>.lock`` (SQLite workers share one machine). A killed holder's lock goes
    with its connection or file descriptor.
    """
    engine = getattr(storage_of(study), "engine", None)
    key = f"dmlkit/{study.study_name}"
    dialect = None if engine is None else engine.dialect.name
    if dialect == "sqlite":
        database = make_url(str(engine.url)).database
        if not database or database == ":memory:":
            yield
            return
        with file_lock(Path(database).with_name(Path(database).name + ".lock")):
            yield
        return
    if dialect not in ("postgresql", "mysql"):
        yield
        return
    number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
    lock, unlock = (("SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)")
                    if dialect == "postgresql" else
                    ("SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)"))
    value = number if dialect == "postgresql" else key[:64]
    with engine.connect() as conn:
        conn.execute(text(lock), {"k": value})
        try:
            yield
        finally:
            conn.execute(text(unlock), {"k": value})
            conn.commit()


def reserve_trial(study: optuna.Study, trials: int, keys: set[str]) -> optuna.Trial | None:
    """A new running trial if fewer than ``trials`` trials are finished or running, else None.

    Under `storage_lock`: stale trials are failed and queued for their retry, the slots are
    counted, and the trial is created (a queued retry first), all before another worker looks.
    """
    with storage_lock(study):
        _retry_interrupted(study, keys)
        if len(study.get_trials(deepcopy=False, states=TAKEN)) >= trials:
            return None
        with warnings.catch_warnings():  # Optuna expects heartbeats with Study.optimize only
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            return study.ask()


def _heartbeat_interval(study: optuna.Study) -> int | None:
    getter = getattr(storage_of(study), "get_heartbeat_interval", None)
    return None if getter is None else getter()


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every ``heartbeat_interval`` seconds while it runs (a
    trial whose heartbeat stops for ``grace_period`` seconds is stale: its worker died)."""
    storage, interval = storage_of(study), _heartbeat_interval(study)
    if storage is None or not interval:
        yield
        return
    with every(interval, lambda: storage.record_heartbeat(trial._trial_id),
               "dmlkit-trial-heartbeat", at_start=True):
        yield


def _run_trial(study: optuna.Study, trial: optuna.Trial,
               objective: Callable[[optuna.Trial], float]) -> None:
    """Run ``objective`` on ``trial`` and store its outcome: complete, pruned, or failed (the
    exception is raised again)."""
    with heartbeat(study, trial):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
    study.tell(trial, value)


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    trials: int,
    space: dict[str, ParamSpec],
    poll_s: float | None = None,
    on_trial_end: Callable[[], None] | None = None,
) -> int:
    """Run trials until ``trials`` have finished in the study (all workers together), never
    more: each trial takes a slot with `reserve_trial`; ``on_trial_end()`` after each trial run
    here. Optuna's own log lines (e.g. a warning for a trial stopped by Ctrl-C) are silenced:
    the error itself reaches the caller.

    While the slots are taken but trials of other workers still run, wait (``poll_s``; default
    the heartbeat interval) for them to finish, or to go stale and be retried here.
    Returns how many trials this call finished.
    """
    keys, done = set(space), 0
    interval = poll_s or _heartbeat_interval(study) or HEARTBEAT_S
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        while finished_trials(study) < trials:
            trial = reserve_trial(study, trials, keys)
            if trial is None:
                time.sleep(interval)
                continue
            _run_trial(study, trial, objective)
            done += 1
            if on_trial_end is not None:
                on_trial_end()
    finally:
        optuna.logging.set_verbosity(verbosity)
    return done
