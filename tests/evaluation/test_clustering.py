"""k-means NMI/AMI: PML's FaissKMeans with the same seed, perfect clusters, determinism."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.inference import FaissKMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from dmlkit.evaluation.clustering import (
    clustering_scores,
    kmeans_assignments,
    kmeans_backend,
    kmeans_draws,
    torch_kmeans_assignments,
)


def _blobs(seed: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 300)
    x = 4 * rng.standard_normal((6, 5))[labels] + spread * rng.standard_normal((300, 5))
    return x.astype(np.float32), labels


@pytest.mark.parametrize("seed", range(3))
def test_assignments_match_pml_kmeans_with_the_same_seed(seed: int) -> None:
    x, labels = _blobs(seed, spread=3.0)
    pml = FaissKMeans(niter=20, seed=7)(torch.from_numpy(x), 6).numpy()
    ours = kmeans_assignments(x, 6, seed=7)
    np.testing.assert_array_equal(ours, pml)
    got = clustering_scores(x, labels, seed=7)
    assert got == {
        "nmi": pytest.approx(normalized_mutual_info_score(labels, pml)),
        "ami": pytest.approx(adjusted_mutual_info_score(labels, pml)),
    }


def test_separated_clusters_score_one_and_noise_scores_low() -> None:
    labels = np.repeat([5, 9], 50)
    x = (labels[:, None] + 0.01 * np.random.default_rng(4).standard_normal((100, 3))).astype("f4")
    for seed in range(3):
        assert clustering_scores(x, labels, seed=seed) == {"nmi": 1.0, "ami": 1.0}
    rng = np.random.default_rng(5)
    noise = rng.standard_normal((100, 5)).astype(np.float32)
    assert clustering_scores(noise, labels, names=("ami",))["ami"] < 0.1


def test_seed_fixes_the_result() -> None:
    x, _ = _blobs(6, spread=4.0)
    a = kmeans_assignments(x, 6, seed=3)
    np.testing.assert_array_equal(a, kmeans_assignments(x, 6, seed=3))
    assert len(np.unique(a)) == 6


def _lloyd_numpy(x: np.ndarray, centroids: np.ndarray, niter: int, data: np.ndarray | None = None
                 ) -> np.ndarray:
    """Brute-force Lloyd in float64 on ``x`` from ``centroids``; assignment of ``data`` (default
    ``x``) to the final centroids. Fails if a cluster empties (the split is tested apart)."""
    x, c = x.astype(np.float64), centroids.astype(np.float64)

    def nearest(points):
        return ((points[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)

    for _ in range(niter):
        a = nearest(x)
        assert len(np.unique(a)) == len(c), "a cluster emptied"
        c = np.stack([x[a == j].mean(0) for j in range(len(c))])
    return nearest(x if data is None else data.astype(np.float64))


@pytest.mark.parametrize("seed", range(3))
def test_torch_kmeans_is_lloyd_from_its_initial_centroids(seed: int) -> None:
    x, _ = _blobs(seed, spread=3.0)  # overlapping blobs: Lloyd moves for several iterations
    got = torch_kmeans_assignments(torch.from_numpy(x), 6, seed=seed)
    rows, init = kmeans_draws(len(x), 6, torch.Generator().manual_seed(seed))
    assert rows is None  # 300 points <= 256 per centroid: all train
    want = _lloyd_numpy(x, x[init.numpy()], 20)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), want)


def test_torch_kmeans_trains_on_at_most_256_points_per_centroid() -> None:
    x, _ = _blobs(9, spread=3.0)
    x = np.concatenate([x, x + 0.5])[:520]  # 520 > 256 * 2
    got = torch_kmeans_assignments(torch.from_numpy(x), 2, seed=4, niter=5)
    rows, init = kmeans_draws(len(x), 2, torch.Generator().manual_seed(4))
    assert len(rows) == 512 and len(np.unique(rows.numpy())) == 512
    train = x[rows.numpy()]
    np.testing.assert_array_equal(got.numpy(), _lloyd_numpy(train, train[init.numpy()], 5, x))


def test_all_points_is_pml_before_1_0() -> None:
    """PML 0.9.99 ``run_kmeans`` (Guided DML's official metrics), restated: faiss.Clustering,
    niter 20, max_points_per_centroid 10,000,000, faiss's default seed, trained on x with an
    IndexFlatL2 that then assigns every row."""
    import faiss

    x, _ = _blobs(5, spread=3.0)
    x = np.concatenate([x] * 3)[:800]  # 800 > 256 * 3: the default subsamples
    clus = faiss.Clustering(x.shape[1], 3)
    clus.niter, clus.max_points_per_centroid = 20, 10_000_000
    index = faiss.IndexFlatL2(x.shape[1])
    clus.train(x, index)
    want = index.search(x, 1)[1][:, 0]
    np.testing.assert_array_equal(
        kmeans_assignments(x, 3, seed=1234, max_points_per_centroid=None), want)
    rows, _ = kmeans_draws(len(x), 3, torch.Generator().manual_seed(0), None)
    assert rows is None
    got = torch_kmeans_assignments(torch.from_numpy(x), 3, seed=4, niter=5,
                                   max_points_per_centroid=None)
    _, init = kmeans_draws(len(x), 3, torch.Generator().manual_seed(4), None)
    np.testing.assert_array_equal(got.numpy(), _lloyd_numpy(x, x[init.numpy()], 5))


def test_an_empty_cluster_is_split_from_a_large_one() -> None:
    """Two identical initial centroids: the second one's cluster is empty (ties go to the lower
    index) until it is split off the first, which separates the groups."""
    x = np.array([[1.0, 2.0]] * 5 + [[3.0, 2.0]] * 5, dtype=np.float32)
    labels = np.repeat([0, 1], 5)

    def same_group(seed: int) -> bool:
        _, init = kmeans_draws(10, 2, torch.Generator().manual_seed(seed))
        return len(set(labels[init.numpy()])) == 1

    seed = next(s for s in range(100) if same_group(s))
    got = torch_kmeans_assignments(torch.from_numpy(x), 2, seed=seed)
    assert normalized_mutual_info_score(labels, got.numpy()) == 1.0
    assert clustering_scores(x, labels, seed=seed, backend="torch") == {"nmi": 1.0, "ami": 1.0}


def test_torch_nmi_on_separated_clusters_equals_faiss() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 40)
    centres = 10 * np.eye(4, 3, dtype=np.float32)
    x = (centres[labels] + 0.1 * rng.standard_normal((160, 3))).astype(np.float32)
    for seed in range(3):
        faiss_scores = clustering_scores(x, labels, seed=seed, backend="faiss")
        torch_scores = clustering_scores(torch.from_numpy(x), labels, seed=seed,
                                         backend="torch")
        assert torch_scores == faiss_scores


def test_the_backend_follows_the_device() -> None:
    assert kmeans_backend(torch.device("cpu")) == "faiss"
    assert kmeans_backend(torch.device("cuda", 1)) == "torch"
    x, labels = _blobs(1, spread=3.0)
    # CPU tensors take the faiss path: the numbers of the numpy input
    assert clustering_scores(torch.from_numpy(x), labels, seed=7) == clustering_scores(
        x, labels, seed=7)
