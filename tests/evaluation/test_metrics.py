"""Metric functions vs hand-computed cases and brute-force loops over ranks."""

import numpy as np
import pytest

from dmlkit.errors import EvaluationError
from dmlkit.evaluation import metrics as M


def _ap_loop(rel_row: np.ndarray, window: int, divisor: int) -> float:
    """sum_{p <= window} P@p * rel(p) / divisor, one rank at a time."""
    total, hits = 0.0, 0
    for p in range(window):
        if rel_row[p]:
            hits += 1
            total += hits / (p + 1)
    return total / divisor


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, k = 40, 30
    rel = rng.random((n, k)) < rng.random((n, 1))
    num_relevant = rng.integers(1, k + 1, n)
    return rel, num_relevant


def test_hand_computed_values() -> None:
    rel = np.array([[True, False, True, False], [False, True, True, True]])
    r = np.array([2, 3])
    assert M.precision_at_1(rel).tolist() == [1.0, 0.0]
    assert M.recall_at_k(rel, 1).tolist() == [1.0, 0.0]
    assert M.recall_at_k(rel, 2).tolist() == [1.0, 1.0]
    assert M.r_precision(rel, r).tolist() == [0.5, 2 / 3]
    # row 0: R=2, hit at rank 1 -> 1/2; row 1: R=3, hits at 2, 3 -> (1/2 + 2/3) / 3
    np.testing.assert_allclose(M.map_at_r(rel, r), [0.5, (1 / 2 + 2 / 3) / 3])
    # MAP@4 divides by R, not by the hits: row 0 -> (1 + 2/3) / 2, row 1 -> (1/2+2/3+3/4)/3
    np.testing.assert_allclose(
        M.map_at_k(rel, r, 4), [(1 + 2 / 3) / 2, (1 / 2 + 2 / 3 + 3 / 4) / 3]
    )


@pytest.mark.parametrize("seed", range(5))
def test_against_rank_loops(seed: int) -> None:
    rel, r = _random_case(seed)
    for k in (1, 3, 7, 30):
        expected = [float(row[:k].any()) for row in rel]
        np.testing.assert_array_equal(M.recall_at_k(rel, k), expected)
        expected = [_ap_loop(row, k, ri) for row, ri in zip(rel, r, strict=True)]
        np.testing.assert_allclose(M.map_at_k(rel, r, k), expected, rtol=1e-12)
    expected = [row[:ri].sum() / ri for row, ri in zip(rel, r, strict=True)]
    np.testing.assert_allclose(M.r_precision(rel, r), expected, rtol=1e-12)
    expected = [_ap_loop(row, ri, ri) for row, ri in zip(rel, r, strict=True)]
    np.testing.assert_allclose(M.map_at_r(rel, r), expected, rtol=1e-12)
    np.testing.assert_array_equal(M.precision_at_1(rel), rel[:, 0])


def test_perfect_and_empty_rankings() -> None:
    r = np.array([3])
    assert M.map_at_r(np.array([[True, True, True, False]]), r).tolist() == [1.0]
    assert M.map_at_r(np.array([[False, False, False, True]]), r).tolist() == [0.0]
    assert M.r_precision(np.array([[False, False, False, True]]), r).tolist() == [0.0]


def test_too_few_columns_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="at least max"):
        M.map_at_r(np.ones((2, 3), bool), np.array([2, 4]))
    with pytest.raises(EvaluationError):
        M.recall_at_k(np.ones((2, 3), bool), 4)


def test_averaging() -> None:
    values, labels = np.array([1.0, 0.0, 0.0, 1.0]), np.array([5, 7, 7, 7])
    assert M.mean_over_queries(values, labels) == 0.5
    assert M.mean_over_queries(values, labels, avg_of_avgs=True) == pytest.approx((1 + 1 / 3) / 2)
    assert np.isnan(M.mean_over_queries(np.array([]), np.array([], int)))
    assert M.per_class_means(values, labels) == {5: 1.0, 7: pytest.approx(1 / 3)}
