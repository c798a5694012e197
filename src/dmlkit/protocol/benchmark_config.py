"""The benchmark file: which methods, under which shared settings, searched and tested how.

```yaml
name: fashion-mnist-cpu
output: runs/benchmarks/fashion-mnist-cpu   # results, runs, study database, report
budget: fashion-mnist-cv   # a preset whose keys override every method's (the fixed settings)
folds: 2          # class-disjoint folds of the train+val classes
seeds: 5          # final retraining repeats (train.seed = 0..seeds-1); default 5
trials: 4         # finished trials per method (complete or pruned)
set: {train.epochs: 4}   # dotted overrides applied to every method (after the budget)
methods:
  triplet:
    preset: triplet-small
    baseline: null        # or another method's name: compared with it seed by seed
    overrides: {method.loss.params.margin: 0.2}
    search:
      optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
```
Shipped benchmark files live in ``dmlkit/presets/benchmarks/`` and are named without ``.yaml``.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dmlkit import safe_yaml
from dmlkit.config import format_validation_error, yaml_error
from dmlkit.errors import ConfigError
from dmlkit.protocol.search import GRACE_S, HEARTBEAT_S, ParamSpec

_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodSpec(_Strict):
    """A compared method: a preset (or YAML file), fixed overrides, and its search space."""

    preset: str
    baseline: str | None = Field(None, description="the method this one is read against: "
                                 "a paired comparison over seeds gives its verdict")
    overrides: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, ParamSpec] = Field(default_factory=dict)


class ReportSpec(_Strict):
    """Where the report goes and the sizes of its figures."""

    folder: str | None = Field(None, description="report.md, report.html, figures/; "
                                                 "relative to the benchmark file's folder "
                                                 "(default: the output folder)")
    map_points: int = Field(600, ge=10, description="test embeddings in the t-SNE map")
    gallery_queries: int = Field(4, ge=1)
    gallery_k: int = Field(5, ge=1)


class BenchmarkConfig(_Strict):
    """A whole benchmark (see the module doc for the file format)."""

    name: str
    output: str
    folds: int = Field(4, ge=2)
    seeds: int = Field(5, ge=1, description="final seeds: the unit of replication of every "
                       "CI and paired test (docs/protocol.md)")
    trials: int = Field(10, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    startup_trials: int = Field(10, ge=1, description="random trials before TPE models")
    seed: int = 0
    prune_after: int | None = Field(5, ge=0, description="trials before pruning (null: never)")
    storage: str | None = Field(None, description="study database URL (default: SQLite file)")
    heartbeat_s: int = Field(HEARTBEAT_S, ge=1, description="a running trial's heartbeat period")
    grace_s: int = Field(GRACE_S, ge=1, description="a trial without heartbeat for this long "
                         "is stale (its worker died): failed, then retried")
    budget: str | None = Field(None, description="preset whose every key overrides each method's")
    set: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, MethodSpec] = Field(min_length=1)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @field_validator("methods")
    @classmethod
    def _method_names(cls, methods: dict[str, MethodSpec]) -> dict[str, MethodSpec]:
        bad = [m for m in methods if not _NAME.fullmatch(m)]
        if bad:
            raise ValueError(f"method names {bad} must be letters, digits and . _ + - only "
                             "(they name folders)")
        unknown = {m: s.baseline for m, s in methods.items()
                   if s.baseline is not None and (s.baseline not in methods or s.baseline == m)}
        if unknown:
            raise ValueError(f"baselines {unknown} must name another method of the file")
        return methods

    @property
    def storage_url(self) -> str:
        """``storage``, or a SQLite file ``optuna.db`` in the output folder."""
        return self.storage or f"sqlite:///{(Path(self.output) / 'optuna.db').resolve()}"


def benchmark_names() -> list[str]:
    """Names of the benchmark files shipped with dmlkit."""
    files = (resources.files("dmlkit.presets") / "benchmarks").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


def load_benchmark_config(name_or_path: str) -> BenchmarkConfig:
    """A benchmark YAML file, or a shipped one by name; one-line ConfigError on problems."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"benchmark file {path} does not exist")
        text = path.read_text()
    else:
        res = resources.files("dmlkit.presets") / "benchmarks" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ConfigError(f"no benchmark file {name_or_path!r}; shipped: "
                              f"{', '.join(benchmark_names())}")
        text = res.read_text()
    try:
        data = safe_yaml.load(text, name_or_path)
    except yaml.YAMLError as e:
        raise yaml_error(name_or_path, e) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name_or_path}: a benchmark file must be a YAML mapping")
    try:
        bench = BenchmarkConfig.model_validate(data)
    except ValidationError as err:
        message = format_validation_error(err).replace("config:", "benchmark:", 1)
        raise ConfigError(message) from None
    folder = bench.report.folder
    if folder is not None and path.suffix in (".yaml", ".yml"):  # relative to the file
        report = bench.report.model_copy(update={"folder": str(path.parent / folder)})
        bench = bench.model_copy(update={"report": report})
    return bench
