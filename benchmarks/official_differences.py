"""The sizes of three small differences from the official codes (docs/faithfulness.md).

1. MDR's triplet distance: ``F.triplet_margin_loss`` measures ||a - p + 1e-6|| (torch's
   ``pairwise_distance`` eps), PML's ``LpDistance`` ||a - p||. Mean loss over 2,000 random
   triplets of 128 random 512-d embeddings scaled to mean pairwise distance 1 (MDR's
   ``mean_distance`` output), margin 0.2, float64.
2. Guided DML's NMI: k-means trained on every point (PML < 1.0) or on at most 256 per centroid
   (faiss's default, PML >= 1.0); 10,000 2-d points in 10 overlapping Gaussian classes, seed 1234.
3. Guided DML's CIFAR evaluation inputs: dmlkit's ``cifar`` constants (4 decimals) against the
   official ones, over the 256 pixel values.

    python benchmarks/official_differences.py
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dmlkit.data.transforms import CIFAR
from dmlkit.evaluation.clustering import clustering_scores

OFFICIAL_CIFAR = ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768))


def triplet_eps(seed: int) -> tuple[float, float]:
    """(official loss, official - eps-free loss)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 512, generator=g, dtype=torch.float64)
    x = x / torch.cdist(x, x).mean()
    a, p, n = (torch.randint(0, 128, (2000,), generator=g) for _ in range(3))
    official = F.triplet_margin_loss(x[a], x[p], x[n], margin=0.2, reduction="none").mean()
    plain = F.relu((x[a] - x[p]).norm(dim=1) - (x[a] - x[n]).norm(dim=1) + 0.2).mean()
    return float(official), float(official - plain)


def kmeans_points(seed: int) -> tuple[float, float]:
    """(NMI with 256 points per centroid, NMI with every point)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, 10_000)
    x = (3 * rng.standard_normal((10, 2))[y] + 2 * rng.standard_normal((10_000, 2)))
    x = x.astype(np.float32)
    return tuple(clustering_scores(x, y, ("nmi",), seed=1234, max_points_per_centroid=cap)["nmi"]
                 for cap in (256, None))


def cifar_rounding() -> tuple[float, float]:
    """(max |official - dmlkit| normalized input, max |official normalized input|)."""
    v = torch.arange(256, dtype=torch.float64)[:, None] / 255
    (m0, s0), (m1, s1) = ((torch.tensor(m), torch.tensor(s)) for m, s in (OFFICIAL_CIFAR, CIFAR))
    official = (v - m0) / s0
    return float((official - (v - m1) / s1).abs().max()), float(official.abs().max())


def main() -> None:
    for seed in range(5):
        loss, diff = triplet_eps(seed)
        print(f"triplet eps, seed {seed}: loss {loss:.4f}, official - PML {diff:.2e}")
    for seed in range(3):
        capped, every = kmeans_points(seed)
        print(f"k-means NMI, data seed {seed}: 256 per centroid {capped:.4f}, all {every:.4f}")
    diff, top = cifar_rounding()
    print(f"CIFAR constants: max input difference {diff:.1e} (inputs up to {top:.2f})")


if __name__ == "__main__":
    main()
