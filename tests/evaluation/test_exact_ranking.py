"""Near-tied and duplicated embeddings: ranking and metrics equal a float64 brute force.

The embeddings sit in a tight cluster far from the origin, so float32 scores
(``||r||^2 - 2 q.r``, magnitude ~ ||x||^2) carry rounding errors larger than the gaps between
neighbours' distances: a float32 ranking misorders them, the exact re-scoring must not.
"""

import numpy as np
import pytest
import torch

import dmlkit.evaluation.knn as knn_module
from dmlkit.evaluation import evaluate
from dmlkit.evaluation.knn import knn


def _near_ties(dtype: type, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, d = 240, 16
    spread = 3e-3 if dtype == np.float32 else 1e-7
    x = 4.0 * rng.standard_normal(d) + spread * rng.standard_normal((n, d))
    x = x.astype(dtype)
    x[rng.integers(0, n, n // 5)] = x[rng.integers(0, n, n // 5)]  # exact duplicates
    return x, rng.integers(0, 4, n)


def _reference_ranking(x: np.ndarray) -> np.ndarray:
    """Every other item, ordered by (float64 squared distance, index), one row per query."""
    x = x.astype(np.float64)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    order = np.array([np.lexsort((np.arange(len(x)), row)) for row in dist])
    return np.array([row[row != i] for i, row in enumerate(order)])


def _reference_metrics(ranking: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """R-precision and MAP@R written out per query, as PML defines them."""
    r_prec, map_r = [], []
    for i, row in enumerate(ranking):
        hits = labels[row] == labels[i]
        r = int(hits.sum())
        if r == 0:
            continue
        top = hits[:r]
        r_prec.append(top.sum() / r)
        map_r.append(sum(top[: p + 1].sum() / (p + 1) for p in range(r) if top[p]) / r)
    return {"r_precision": float(np.mean(r_prec)), "map_at_r": float(np.mean(map_r))}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dense", [False, True])
def test_ranking_and_metrics_equal_float64_brute_force(
    dtype: type, dense: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both CPU paths: re-scoring the near ties only, and (``dense``: from the second chunk on)
    a float64 product of the whole block."""
    if dense:
        monkeypatch.setattr(knn_module, "_DENSE_FRACTION", 0.0)
    for seed in range(2):
        x, labels = _near_ties(dtype, seed)
        reference = _reference_ranking(x)
        float32_scores = (x.astype(np.float32) ** 2).sum(1)[None, :] - 2 * (
            x.astype(np.float32) @ x.astype(np.float32).T
        )
        np.fill_diagonal(float32_scores, np.inf)
        naive = np.argsort(float32_scores, axis=1, kind="stable")[:, : len(x) - 1]
        assert (naive != reference).any(), "the data must defeat a float32 ranking"

        t = torch.from_numpy(x)
        for k in (1, 17, len(x) - 1):
            got = knn(t, t, k, exclude=np.arange(len(x)), chunk_size=50)
            np.testing.assert_array_equal(got.numpy(), reference[:, :k])
        ours = evaluate(t, labels, metrics=["r_precision", "map_at_r"])
        expected = _reference_metrics(reference, labels)
        for name, value in expected.items():
            assert ours[name] == pytest.approx(value, abs=1e-12), (seed, name)


def test_float64_input_is_not_rounded_to_float32() -> None:
    """Two reference items 1e-12 apart around a query: only float64 can tell them apart."""
    ref = torch.tensor([[1.0 + 2e-12], [1.0 - 1e-12], [5.0]], dtype=torch.float64)
    assert knn(torch.tensor([[1.0]], dtype=torch.float64), ref, 2).tolist() == [[1, 0]]
