"""Statistics of a benchmark's per-model records, at the level of the seed.

A seed is the unit of replication: the fold models of one seed share its data order and
hyperparameters, so they are not independent samples.

- `seed_values`: one value per seed: **separated** = the mean over that seed's fold models,
  **concatenated** = the value of that seed's concatenated embedding.
- `mean_ci` (`dmlkit.protocol.aggregate`): mean and 95% Student-t CI over those seed values.
- `paired`: a method against its declared baseline over the seeds both have: the differences
  ``d_s = x_s - b_s``, their mean and 95% Student-t CI, and the two-sided paired t-test
  p-value (``t = mean(d) / (sd(d) / sqrt(n))``, n - 1 degrees of freedom). The verdict is
  computed, never written by hand: ``better`` (p < 0.05, mean > 0), ``worse`` (p < 0.05,
  mean < 0), else ``no evidence`` (also with fewer than 2 shared seeds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from dmlkit.protocol.aggregate import mean_ci

ALPHA = 0.05
MODES = ("separated", "concatenated")


def seed_values(
    records: Iterable[dict[str, Any]], method: str, stage: str, metric: str, mode: str
) -> dict[int, float]:
    """{seed: value} of ``method``'s ``stage`` records (``final``, ``untrained`` or
    ``pretrained``) in ``mode``: separated averages the fold records (``fold`` set) of a
    seed, concatenated takes its record without a fold. Missing metrics are skipped."""
    by_seed: dict[int, list[float]] = {}
    want_fold = mode == "separated"
    for r in records:
        if r["method"] != method or r["stage"] != stage:
            continue
        if (r.get("fold") is not None) != want_fold:
            continue
        v = r["metrics"].get(metric)
        if v is not None and math.isfinite(v):
            by_seed.setdefault(int(r["seed"]), []).append(float(v))
    return {s: float(np.mean(v)) for s, v in sorted(by_seed.items())}


@dataclass(frozen=True)
class Estimate:
    """Mean and 95% CI half-width over ``n`` seeds."""

    mean: float
    half: float
    n: int


def estimate(values: dict[int, float]) -> Estimate | None:
    """`mean_ci` of the seed values; None without any."""
    if not values:
        return None
    m, h = mean_ci(list(values.values()))
    return Estimate(m, h, len(values))


@dataclass(frozen=True)
class Paired:
    """A method minus its baseline over ``n`` shared seeds: mean difference, its 95% CI
    half-width, the paired t-test p-value (None with n < 2) and the verdict."""

    diff: float
    half: float
    n: int
    p: float | None
    verdict: str


def verdict(diff: float, p: float | None, alpha: float = ALPHA) -> str:
    """``better`` / ``worse`` when p < alpha (by the sign of the difference), else
    ``no evidence``.

    >>> verdict(0.02, 0.01), verdict(-0.02, 0.004), verdict(0.05, 0.2), verdict(0.1, None)
    ('better', 'worse', 'no evidence', 'no evidence')
    """
    if p is None or not p < alpha or diff == 0:
        return "no evidence"
    return "better" if diff > 0 else "worse"


def paired(method: dict[int, float], baseline: dict[int, float]) -> Paired | None:
    """The paired t-test of ``method`` against ``baseline`` over their shared seeds (None
    when they share none). Identical differences (zero spread) give p = 0 when nonzero."""
    shared = sorted(set(method) & set(baseline))
    if not shared:
        return None
    d = np.array([method[s] - baseline[s] for s in shared])
    m, h = mean_ci(d.tolist())
    if len(d) < 2:
        p = None
    elif np.ptp(d) == 0:
        p = 0.0 if m != 0 else 1.0
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
    return Paired(m, h, len(d), p, verdict(m, p))
