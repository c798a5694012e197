"""Tiny built-in datasets that ship with Python packages (for tests and quick checks)."""

from __future__ import annotations

import numpy as np

from dmlkit.data.catalog import Catalog


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Catalog:
    """scikit-learn's 1,797 8x8 digit images (values 0-16 scaled to 0-255), 10 classes.

    There is no official split: a seeded, stratified ``test_fraction`` of each class is "test".
    """
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "train", dtype="<U5")
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        split[idx[: int(round(test_fraction * len(idx)))]] = "test"
    return Catalog(name="digits", labels=labels, split=split, images=images)
