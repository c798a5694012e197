"""Exact chunked kNN vs a brute-force full distance matrix; tie-breaking; self-exclusion."""

import numpy as np
import pytest
import torch

from dmlkit.errors import ConfigError
from dmlkit.evaluation.knn import (
    MAX_CHUNK_ROWS,
    _select_numpy,
    _select_torch,
    chunk_size_for,
    knn,
    map_neighbours,
)


def _brute_force(q: np.ndarray, r: np.ndarray, k: int, distance: str, exclude=None) -> np.ndarray:
    """Rank every reference item in float64 by (distance, index) with a Python loop per query."""
    q, r = q.astype(np.float64), r.astype(np.float64)
    if distance == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        r = r / np.linalg.norm(r, axis=1, keepdims=True)
    out = []
    for i, qi in enumerate(q):
        d = ((r - qi) ** 2).sum(1) if distance == "euclidean" else -(r @ qi)
        order = [
            j for j in np.lexsort((np.arange(len(r)), d)) if exclude is None or j != exclude[i]
        ]
        out.append(order[:k])
    return np.array(out)


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "dot"])
@pytest.mark.parametrize("self_mode", [True, False])
def test_matches_brute_force_on_random_data(distance: str, self_mode: bool) -> None:
    rng = np.random.default_rng(0)
    r = rng.standard_normal((150, 8)).astype(np.float32)
    q = r if self_mode else rng.standard_normal((40, 8)).astype(np.float32)
    exclude = np.arange(len(q)) if self_mode else None
    for k in (1, 7, 149):
        got = knn(torch.from_numpy(q), torch.from_numpy(r), k, distance=distance, exclude=exclude)
        np.testing.assert_array_equal(got.numpy(), _brute_force(q, r, k, distance, exclude))


@pytest.mark.parametrize("distance", ["euclidean", "dot"])
def test_ties_rank_lower_index_first_on_integer_data(distance: str) -> None:
    """Integer coordinates make every distance exact, so ties are real and plentiful."""
    rng = np.random.default_rng(1)
    x = rng.integers(-1, 2, (120, 3)).astype(np.float32)
    x[60:90] = x[:30]  # exact duplicates
    exclude = np.arange(len(x))
    for k in (1, 5, 33, 119):  # k cuts through tie groups
        got = knn(torch.from_numpy(x), torch.from_numpy(x), k, distance=distance, exclude=exclude)
        np.testing.assert_array_equal(got.numpy(), _brute_force(x, x, k, distance, exclude))


def test_tie_breaking_hand_case() -> None:
    ref = torch.tensor([[2.0], [1.0], [3.0], [1.0], [2.0]])
    # from 2.0: distance 0 for indices 0 and 4, distance 1 for indices 1, 2 and 3
    assert knn(torch.tensor([[2.0]]), ref, 5).tolist() == [[0, 4, 1, 2, 3]]
    assert knn(torch.tensor([[2.0]]), ref, 3).tolist() == [[0, 4, 1]]


def test_self_is_excluded_by_index_not_distance() -> None:
    x = torch.tensor([[0.0], [0.0], [0.0], [5.0]])
    got = knn(x, x, 2, exclude=np.arange(4))
    # duplicates of the query at distance 0 are retrieved; only the query's own index is dropped
    assert got.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]


def test_signed_zero_scores_tie() -> None:
    # a zero query has score -0.0 or +0.0 against every reference item under "dot"
    ref = torch.tensor([[-1.0, 2.0], [1.0, -3.0], [2.0, 1.0]])
    assert knn(torch.zeros(1, 2), ref, 3, distance="dot").tolist() == [[0, 1, 2]]


def test_chunked_and_parallel_equal_unchunked() -> None:
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.integers(0, 3, (97, 4)).astype(np.float32))
    exclude = np.arange(97)
    full = knn(x, x, 20, exclude=exclude, chunk_size=97)
    for chunk_size in (1, 5, 31):
        for workers in (1, 3):
            parts = map_neighbours(
                lambda start, nb: (start, nb),
                x,
                x,
                20,
                exclude=exclude,
                chunk_size=chunk_size,
                workers=workers,
            )
            starts, blocks = zip(*parts, strict=True)
            assert list(starts) == list(range(0, 97, chunk_size))
            np.testing.assert_array_equal(np.concatenate(blocks), full.numpy())


def test_torch_selection_equals_numpy_selection() -> None:
    rng = np.random.default_rng(3)
    for scores in (
        rng.standard_normal((30, 200)).astype(np.float32),
        rng.integers(-3, 3, (30, 200)).astype(np.float32),  # heavy ties, negative values
    ):
        for k in (1, 17, 200):
            np.testing.assert_array_equal(
                _select_numpy(scores, k), _select_torch(torch.from_numpy(scores), k).numpy()
            )


def test_numpy_selection_with_infinite_and_negative_scores() -> None:
    scores = np.array([[3.0, -np.inf, -1.0, np.inf, -1.0, 0.0, -0.0]], dtype=np.float32)
    assert _select_numpy(scores, 6).tolist() == [[1, 2, 4, 5, 6, 0]]


def test_argument_errors() -> None:
    x = torch.zeros(4, 2)
    with pytest.raises(ConfigError, match="k must be"):
        knn(x, x, 4, exclude=np.arange(4))
    with pytest.raises(ConfigError, match="k must be"):
        knn(x, x, 0)
    with pytest.raises(ConfigError, match="unknown distance"):
        knn(x, x, 1, distance="manhattan")
    with pytest.raises(ConfigError, match="chunk_size"):
        knn(x, x, 1, chunk_size=0)


def test_chunk_size_follows_the_memory_budget() -> None:
    one_mb_rows = chunk_size_for(1000, 10, workers=1, memory_budget_mb=1)
    assert one_mb_rows == 2**20 // (17 * 1000 + 64 * 10)
    assert chunk_size_for(1000, 10, workers=2, memory_budget_mb=1) == one_mb_rows // 2
    assert chunk_size_for(10**9, 10, memory_budget_mb=1) == 1
    assert chunk_size_for(1000, 10, memory_budget_mb=10**6) == MAX_CHUNK_ROWS
    assert 1 <= chunk_size_for(1000, 10) <= MAX_CHUNK_ROWS
    with pytest.raises(ConfigError):
        chunk_size_for(1000, 10, memory_budget_mb=0)
