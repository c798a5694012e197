"""Retrieval metrics: pure functions of a relevance matrix, defined as in PML's AccuracyCalculator.

``relevance`` is a bool array (queries x k): ``relevance[i, p]`` says whether the neighbour of
query i at rank p + 1 shares its label (neighbours in rank order, the query itself excluded).
``num_relevant`` is R_i >= 1, the number of reference items sharing query i's label (minus the
query itself in compared-to-self mode). Queries with R_i = 0 ("lone") are excluded before these
functions are called. Each function returns one float64 value per query; `mean_over_queries`
reduces them. Precision terms are computed in float64, as in PML.
"""

from __future__ import annotations

import numpy as np

from dmlkit.errors import EvaluationError


def _check_window(relevance: np.ndarray, window: np.ndarray | int) -> None:
    if np.any(np.asarray(window) > relevance.shape[1]):
        raise EvaluationError(
            f"the neighbour ranking has {relevance.shape[1]} columns but a metric needs "
            f"{int(np.max(window))}: compute at least max(R) neighbours"
        )


def _precision_sum(hits: np.ndarray) -> np.ndarray:
    """Sum over ranks p of P@p * hits[p], where P@p = (# hits in ranks 1..p) / p."""
    hits_so_far = np.cumsum(hits, axis=1, dtype=np.int32)
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    return (np.where(hits, hits_so_far, 0) / ranks).sum(axis=1)


def _within_r(relevance: np.ndarray, num_relevant: np.ndarray) -> np.ndarray:
    """Relevance restricted to the first R_i ranks of each row."""
    _check_window(relevance, num_relevant)
    return relevance & (np.arange(relevance.shape[1]) < num_relevant[:, None])


def precision_at_1(relevance: np.ndarray) -> np.ndarray:
    """P@1 = 1[nearest neighbour shares the label] (equal to DML Recall@1).

    >>> precision_at_1(np.array([[True, False], [False, True]])).tolist()
    [1.0, 0.0]
    """
    return relevance[:, 0].astype(np.float64)


def recall_at_k(relevance: np.ndarray, k: int) -> np.ndarray:
    """DML Recall@K = 1[any of the first K neighbours shares the label] (not PML's precision@k).

    >>> recall_at_k(np.array([[False, False, True], [False, False, False]]), 3).tolist()
    [1.0, 0.0]
    >>> recall_at_k(np.array([[False, False, True]]), 2).tolist()
    [0.0]
    """
    _check_window(relevance, k)
    return relevance[:, :k].any(axis=1).astype(np.float64)


def r_precision(relevance: np.ndarray, num_relevant: np.ndarray) -> np.ndarray:
    """R-Precision = (# relevant among the first R neighbours) / R.

    >>> r_precision(np.array([[True, False, True]]), np.array([2])).tolist()
    [0.5]
    """
    return _within_r(relevance, num_relevant).sum(axis=1) / num_relevant


def map_at_r(relevance: np.ndarray, num_relevant: np.ndarray) -> np.ndarray:
    """MAP@R = (1/R) * sum_{p <= R} P@p * rel(p); misses inside the top R lower it.

    With hits at ranks 1 and 3 and R = 3: (1/1 + 2/3) / 3.

    >>> map_at_r(np.array([[True, False, True, True]]), np.array([3])).round(6).tolist()
    [0.555556]
    """
    return _precision_sum(_within_r(relevance, num_relevant)) / num_relevant


def map_at_k(relevance: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """MAP@K as PML's ``mean_average_precision``: (1/R) * sum_{p <= K} P@p * rel(p).

    The divisor is R, not min(K, R) nor the number of hits, so it can exceed MAP@R only
    when K > R. With hits at ranks 1 and 3, R = 3, K = 2: (1/1) / 3.

    >>> map_at_k(np.array([[True, False, True]]), np.array([3]), 2).round(6).tolist()
    [0.333333]
    """
    _check_window(relevance, k)
    return _precision_sum(relevance[:, :k]) / num_relevant


def mean_over_queries(values: np.ndarray, labels: np.ndarray, avg_of_avgs: bool = False) -> float:
    """Mean of per-query values; with ``avg_of_avgs`` the mean of per-class means. NaN if empty.

    >>> mean_over_queries(np.array([1.0, 0.0, 0.0]), np.array([0, 1, 1]))
    0.3333333333333333
    >>> mean_over_queries(np.array([1.0, 0.0, 0.0]), np.array([0, 1, 1]), avg_of_avgs=True)
    0.5
    """
    if len(values) == 0:
        return float("nan")
    if not avg_of_avgs:
        return float(np.mean(values))
    return float(np.mean(list(per_class_means(values, labels).values())))


def per_class_means(values: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Mean of per-query values within each label.

    >>> per_class_means(np.array([1.0, 0.0, 1.0]), np.array([3, 3, 5]))
    {3: 0.5, 5: 1.0}
    """
    classes, inverse = np.unique(labels, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(classes))
    counts = np.bincount(inverse, minlength=len(classes))
    return {int(c): float(s / n) for c, s, n in zip(classes, sums, counts, strict=True)}
