"""Guided DML's fixed triplet set: one block of B triplets per ordered pair of distinct classes.

For every ordered pair (i, j), i != j, taken in a seeded shuffled order, the block holds B anchors
and B positives drawn from class i without replacement (anchors and positives disjoint) and B
negatives drawn from class j without replacement, with

    B = min(batch_size, min_c |class c| // 2)      (or ``per_pair`` when given).

The set is built once and reused every epoch; each batch is exactly one block, so the anchor and
positive of a batch share one master branch and the negatives share another.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dmlkit.errors import ConfigError, DataError


@dataclass(frozen=True)
class ClassPairTriplets:
    """Index blocks, one per ordered class pair.

    Attributes:
        anchors, positives, negatives: int64 sample positions, shape (num_pairs, B).
        pair_classes: int64 (anchor class, negative class) of each block, shape (num_pairs, 2).
    """

    anchors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    pair_classes: np.ndarray

    @property
    def per_pair(self) -> int:
        """B: triplets per block (the batch size)."""
        return self.anchors.shape[1]

    @property
    def num_triplets(self) -> int:
        return self.anchors.size

    def __len__(self) -> int:
        return len(self.pair_classes)

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Block k as (anchor, positive, negative) index arrays of length B."""
        return self.anchors[k], self.positives[k], self.negatives[k]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return (self[k] for k in range(len(self)))


def build_class_pair_triplets(
    labels: np.ndarray,
    per_pair: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> ClassPairTriplets:
    """Build the fixed triplet set over ``labels`` (positions index the labelled samples).

    >>> t = build_class_pair_triplets(np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2]), batch_size=8)
    >>> len(t), t.per_pair, t.num_triplets
    (6, 1, 6)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be a 1-D integer array, got shape {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"class-pair triplets need at least 2 classes, got {len(classes)}")
    if counts.min() < 2:
        small = classes[counts < 2].tolist()
        raise DataError(f"classes {small} have fewer than 2 images (need an anchor and a positive)")
    limit = int(counts.min()) // 2
    if per_pair is None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        per_pair = min(batch_size, limit)
    elif not 1 <= per_pair <= limit:
        raise ConfigError(
            f"per_pair must be in [1, {limit}] (half the smallest class), got {per_pair}"
        )

    rng = np.random.default_rng(seed)
    members = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1])
    i, j = np.nonzero(~np.eye(len(classes), dtype=bool))
    order = rng.permutation(len(i))
    i, j = i[order], j[order]
    anchors, positives, negatives = [], [], []
    for a_cls, n_cls in zip(i, j, strict=True):
        same = rng.choice(members[a_cls], size=2 * per_pair, replace=False)
        anchors.append(same[:per_pair])
        positives.append(same[per_pair:])
        negatives.append(rng.choice(members[n_cls], size=per_pair, replace=False))
    return ClassPairTriplets(
        anchors=np.stack(anchors).astype(np.int64),
        positives=np.stack(positives).astype(np.int64),
        negatives=np.stack(negatives).astype(np.int64),
        pair_classes=np.stack([classes[i], classes[j]], axis=1).astype(np.int64),
    )
