"""NMI and AMI of a seeded k-means clustering against the labels (as PML's AccuracyCalculator).

n_clusters is the number of distinct labels, each point goes to its nearest centroid, and the
scores are scikit-learn's ``normalized_mutual_info_score`` (arithmetic normalisation) and
``adjusted_mutual_info_score``. PML uses faiss's default seed, 1234.

Two k-means implementations, chosen by where the embeddings are (`kmeans_backend`):

- CPU (numpy arrays, CPU tensors): ``faiss.Kmeans(d, n_clusters, niter=20, seed=seed)`` with
  faiss's other defaults, as PML >= 1.0 (faiss-cpu).
- other devices (CUDA): `torch_kmeans_assignments`, the same algorithm as faiss's defaults in
  torch on the embeddings' device: train on a random subset of at most 256 points per
  centroid (``max_points_per_centroid``), initial centroids = distinct random training points,
  ``niter`` Lloyd iterations (assign each point to the nearest centroid, move each centroid to
  its points' mean), an empty cluster is refilled by splitting a large one (faiss's
  ``split_clusters``), then every point is assigned to the final centroids. The random draws
  come from a torch.Generator seeded with ``seed``, so the clustering is seeded but not
  faiss's: NMI/AMI on CUDA are another draw of the same estimator as on the CPU.

``max_points_per_centroid=None`` trains both on every point, as PML before 1.0 (its
``run_kmeans``: ``max_points_per_centroid = 10000000``) and Sharing Matters' official code.
"""

from __future__ import annotations

import numpy as np
import torch

from dmlkit.evaluation.knn import score_operands

CLUSTERING_METRICS = ("nmi", "ami")
_SCORES = {"nmi": "normalized_mutual_info_score", "ami": "adjusted_mutual_info_score"}
MAX_POINTS_PER_CENTROID = 256  # faiss ClusteringParameters default
SPLIT_EPS = 1 / 1024  # faiss's relative perturbation of a split centroid
_SCORE_BYTES = 256 * 2**20  # the point-to-centroid score block of one assignment chunk


def kmeans_assignments(
    embeddings: np.ndarray, n_clusters: int, seed: int = 0, niter: int = 20,
    max_points_per_centroid: int | None = MAX_POINTS_PER_CENTROID,
) -> np.ndarray:
    """Index of the nearest faiss k-means centroid for each row (int64); faiss trains on at
    most ``max_points_per_centroid * n_clusters`` random rows (None: all rows).

    >>> x = np.array([[0.0], [0.1], [5.0], [5.1]], dtype=np.float32)
    >>> a = kmeans_assignments(x, 2)
    >>> bool(a[0] == a[1] and a[2] == a[3] and a[0] != a[2])
    True
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    # min_points_per_centroid only silences faiss's "too few points" warning; results are equal.
    import faiss  # imported on use: loading a run for inference does not pay for it

    kmeans = faiss.Kmeans(x.shape[1], n_clusters, niter=niter, seed=seed, min_points_per_centroid=1,
                          max_points_per_centroid=max_points_per_centroid or max(1, len(x)))
    kmeans.train(x)
    _, nearest = kmeans.index.search(x, 1)
    return nearest[:, 0].astype(np.int64)


def kmeans_backend(device: torch.device) -> str:
    """``"faiss"`` for embeddings on the CPU, ``"torch"`` (`torch_kmeans_assignments`) on any
    other device, where they stay."""
    return "faiss" if device.type == "cpu" else "torch"


def kmeans_draws(
    n: int, n_clusters: int, generator: torch.Generator,
    max_points_per_centroid: int | None = MAX_POINTS_PER_CENTROID,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(training rows, or None for all ``n``; initial centroid rows, positions in the training
    rows): at most ``max_points_per_centroid * n_clusters`` random rows (None: all), then
    ``n_clusters`` distinct random ones of those (CPU int64)."""
    rows = None
    cap = None if max_points_per_centroid is None else max_points_per_centroid * n_clusters
    if cap is not None and n > cap:
        rows = torch.randperm(n, generator=generator)[:cap]
    n_train = n if rows is None else len(rows)
    return rows, torch.randperm(n_train, generator=generator)[:n_clusters]


def nearest_centroids(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """argmin_j ||x_i - c_j||^2 per row (ties: the lower j), as ``||c_j||^2 - 2 x_i.c_j``
    (`score_operands`), in row chunks of a bounded score block."""
    xs, cs = score_operands(x, centroids, "euclidean")
    rows = max(1, _SCORE_BYTES // (4 * len(centroids)))
    return torch.cat([torch.argmin(chunk @ cs.T, dim=1) for chunk in xs.split(rows)])


def _split_empty(centroids: torch.Tensor, counts: torch.Tensor,
                 generator: torch.Generator) -> None:
    """Refill each empty cluster from a donor drawn with probability ~ (size - 1): the two
    become the donor's centroid scaled by 1 +- eps, alternating per dimension (faiss)."""
    counts = counts.cpu()
    n, k = int(counts.sum()), len(counts)
    empty = (counts == 0).nonzero().flatten().tolist()
    if not empty or n <= k:
        return
    sign = torch.ones(centroids.shape[1], device=centroids.device)
    sign[1::2] = -1
    for ci in empty:
        cj = int(torch.multinomial((counts - 1).clamp(min=0).double(), 1, generator=generator))
        donor = centroids[cj].clone()
        centroids[ci] = donor * (1 + SPLIT_EPS * sign)
        centroids[cj] = donor * (1 - SPLIT_EPS * sign)
        counts[ci] = counts[cj] // 2
        counts[cj] -= counts[ci]


def torch_kmeans_assignments(
    embeddings: torch.Tensor, n_clusters: int, seed: int = 0, niter: int = 20,
    max_points_per_centroid: int | None = MAX_POINTS_PER_CENTROID,
) -> torch.Tensor:
    """Index of the nearest k-means centroid for each row (int64, on the embeddings' device);
    see the module doc. Lloyd's update c_j = mean of the points assigned to j.

    >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    >>> torch_kmeans_assignments(x, 2).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    True
    """
    x = embeddings.detach().float()
    generator = torch.Generator().manual_seed(seed)
    rows, init = kmeans_draws(len(x), n_clusters, generator, max_points_per_centroid)
    train = x if rows is None else x[rows.to(x.device)]
    centroids = train[init.to(x.device)].clone()
    for _ in range(niter):
        assigned = nearest_centroids(train, centroids)
        counts = torch.bincount(assigned, minlength=n_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assigned, train)
        filled = counts > 0
        centroids = torch.where(filled[:, None], sums / counts.clamp(min=1)[:, None].float(),
                                centroids)
        _split_empty(centroids, counts, generator)
    return nearest_centroids(x, centroids)


def clustering_scores(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    names: tuple[str, ...] = CLUSTERING_METRICS,
    seed: int = 0,
    backend: str | None = None,
    max_points_per_centroid: int | None = MAX_POINTS_PER_CENTROID,
) -> dict[str, float]:
    """NMI and/or AMI between ``labels`` and a k-means clustering with one cluster per label,
    trained on at most ``max_points_per_centroid`` points per cluster (None: every point).

    ``backend`` ("faiss" or "torch") defaults to `kmeans_backend` of the embeddings' device.

    >>> x = np.array([[0.0], [0.1], [5.0], [5.1]], dtype=np.float32)
    >>> clustering_scores(x, np.array([7, 7, 9, 9]))
    {'nmi': 1.0, 'ami': 1.0}
    """
    x = embeddings if isinstance(embeddings, torch.Tensor) else torch.from_numpy(
        np.asarray(embeddings))
    n_clusters = len(np.unique(labels))
    if (backend or kmeans_backend(x.device)) == "torch":
        clusters = torch_kmeans_assignments(
            x, n_clusters, seed=seed, max_points_per_centroid=max_points_per_centroid).cpu().numpy()
    else:
        clusters = kmeans_assignments(x.detach().cpu().numpy(), n_clusters, seed=seed,
                                      max_points_per_centroid=max_points_per_centroid)
    import sklearn.metrics  # imported on use, as faiss

    return {name: float(getattr(sklearn.metrics, _SCORES[name])(labels, clusters))
            for name in names}
