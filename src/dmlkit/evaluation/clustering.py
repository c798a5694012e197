"""NMI and AMI of a seeded k-means clustering against the labels (as PML's AccuracyCalculator).

k-means is ``faiss.Kmeans(d, n_clusters, niter=20, seed=seed)`` with faiss's other defaults
(so, like PML, it trains on a random subset of at most 256 points per centroid), n_clusters is
the number of distinct labels, and each point goes to its nearest centroid. The scores are
scikit-learn's ``normalized_mutual_info_score`` (arithmetic normalisation) and
``adjusted_mutual_info_score``. PML uses faiss's default seed, 1234.
"""

from __future__ import annotations

import faiss
import numpy as np
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

CLUSTERING_METRICS = ("nmi", "ami")
_SCORES = {"nmi": normalized_mutual_info_score, "ami": adjusted_mutual_info_score}


def kmeans_assignments(
    embeddings: np.ndarray, n_clusters: int, seed: int = 0, niter: int = 20
) -> np.ndarray:
    """Index of the nearest k-means centroid for each row (int64).

    >>> x = np.array([[0.0], [0.1], [5.0], [5.1]], dtype=np.float32)
    >>> a = kmeans_assignments(x, 2)
    >>> bool(a[0] == a[1] and a[2] == a[3] and a[0] != a[2])
    True
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    # min_points_per_centroid only silences faiss's "too few points" warning; results are equal.
    kmeans = faiss.Kmeans(x.shape[1], n_clusters, niter=niter, seed=seed, min_points_per_centroid=1)
    kmeans.train(x)
    _, nearest = kmeans.index.search(x, 1)
    return nearest[:, 0].astype(np.int64)


def clustering_scores(
    embeddings: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...] = CLUSTERING_METRICS,
    seed: int = 0,
) -> dict[str, float]:
    """NMI and/or AMI between ``labels`` and a k-means clustering with one cluster per label.

    >>> x = np.array([[0.0], [0.1], [5.0], [5.1]], dtype=np.float32)
    >>> clustering_scores(x, np.array([7, 7, 9, 9]))
    {'nmi': 1.0, 'ami': 1.0}
    """
    clusters = kmeans_assignments(embeddings, len(np.unique(labels)), seed=seed)
    return {name: float(_SCORES[name](labels, clusters)) for name in names}
