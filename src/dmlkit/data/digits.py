"""scikit-learn's digits: a tiny built-in dataset (for tests and quick checks)."""

from __future__ import annotations

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.data.layout import stratified_split


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Catalog:
    """scikit-learn's 1,797 8x8 digit images (values 0-16 scaled to 0-255), 10 classes.

    There is no official split: a seeded, stratified ``test_fraction`` of each class is "test".
    """
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int64)
    return Catalog(name="digits", labels=labels,
                   split=stratified_split(labels, test_fraction, seed), images=images)
