"""k-means NMI/AMI: PML's FaissKMeans with the same seed, perfect clusters, determinism."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.inference import FaissKMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from dmlkit.evaluation.clustering import clustering_scores, kmeans_assignments


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
