"""Synthetic images: uniform random pixels with balanced labels, for throughput measurements
(nothing to learn: use it to time the loop, never to compare accuracy)."""

from __future__ import annotations

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.data.layout import stratified_split
from dmlkit.errors import DataError


def load_synthetic(classes: int = 64, per_class: int = 16, size: int = 32, channels: int = 3,
                   test_fraction: float = 0.25, seed: int = 0) -> Catalog:
    """``classes`` x ``per_class`` uint8 ``size`` x ``size`` x ``channels`` images, pixels
    uniform on 0..255 (seeded); a stratified ``test_fraction`` of each class is "test"."""
    if classes < 2 or per_class < 2 or size < 1 or channels not in (1, 3):
        raise DataError(f"synthetic: need classes >= 2, per_class >= 2, size >= 1 and 1 or 3 "
                        f"channels, got {classes}, {per_class}, {size}, {channels}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    images = rng.integers(0, 256, (len(labels), size, size, channels), dtype=np.uint8)
    return Catalog(name="synthetic", labels=labels,
                   split=stratified_split(labels, test_fraction, seed), images=images)
