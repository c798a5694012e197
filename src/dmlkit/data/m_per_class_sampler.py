"""`MPerClassBatchSampler`: batches of C classes x M images, with explicit epoch semantics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np

from dmlkit.data.epoch_sampler import EpochBatchSampler, check_blocks
from dmlkit.errors import ConfigError, DataError


class MPerClassBatchSampler(EpochBatchSampler):
    """A torch ``batch_sampler`` yielding index lists of ``batch_size // m`` classes x ``m`` images.

    Epoch semantics: an epoch is ``batches_per_epoch`` batches (default
    ``len(labels) // batch_size``, i.e. about one pass over the data). Each batch draws its
    classes uniformly without replacement and, per class, ``m`` images without replacement.
    ``small_classes`` says what a class with fewer than ``m`` images does:

    - ``replace``: it gives ``m`` images drawn with replacement; with ``m >= 2`` a class of a
      single image is never drawn (it has no positive; ``skipped_classes`` lists them); a batch
      is exactly ``batch_size // m`` classes (``batch_size`` a multiple of ``m``).
    - ``all``: it gives all its ``n < m`` images, single-image classes included; classes are
      taken in a random order until the batch holds at least ``batch_size`` images, then the
      batch is cut to ``batch_size`` (its last class may give fewer than ``min(m, n)``). This is
      the official MDR sampler's rule (batch 256 with m = 3: 85 classes x 3 + one image of an
      86th when no class is small).

    The stream is a pure
    function of ``(seed, epoch)``: call ``set_epoch(epoch, start_batch)`` before iterating; the
    iteration then starts at batch ``start_batch`` of that epoch (exact mid-epoch resume).

    ``rank``/``world_size`` (or `shard`) split every global batch into contiguous per-rank
    slices, so the union over ranks is the batch one process would draw.

    Every argument after ``labels`` is a keyword: PML's ``MPerClassSampler(labels, m,
    batch_size)`` puts them in the other order, so positional arguments could swap silently;
    PML-style keywords (``m=4, batch_size=32``) work as they are.
    """

    def __init__(
        self,
        labels,
        *,
        batch_size: int,
        m: int = 4,
        batches_per_epoch: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        small_classes: Literal["replace", "all"] = "replace",
    ) -> None:
        self.labels = np.asarray(labels)
        if small_classes not in ("replace", "all"):
            raise ConfigError(f"small_classes: replace or all (got {small_classes!r})")
        self.small_classes = small_classes
        if small_classes == "all" and batch_size > len(self.labels):
            raise DataError(f"a batch of {batch_size} images, but the training set has "
                            f"{len(self.labels)}: lower train.batch_size")
        if small_classes == "replace":  # (small_classes "all" cuts the last class short)
            check_blocks(batch_size, m, ("batch_size ", "m_per_class "))
        classes, inverse, counts = np.unique(self.labels, return_inverse=True, return_counts=True)
        usable = counts >= 2 if m >= 2 and small_classes == "replace" else counts >= 1
        self.skipped_classes = classes[~usable]
        self.classes = classes[usable]
        self.by_class = [np.flatnonzero(inverse == c) for c in np.flatnonzero(usable)]
        self.batch_size, self.m, self.seed = batch_size, m, seed
        self.per_batch = batch_size // m
        if small_classes == "replace" and self.per_batch > len(self.classes):
            single = (f" ({len(self.skipped_classes)} more have a single image)"
                      if len(self.skipped_classes) else "")
            raise DataError(
                f"a batch of {batch_size} with m_per_class {m} needs {self.per_batch} classes, "
                f"but the training set has {len(self.classes)}{single}: lower train.batch_size "
                "or raise train.m_per_class"
            )
        self.shard(rank, world_size)
        self.batches_per_epoch = batches_per_epoch or max(1, len(self.labels) // batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def global_batches(self) -> Iterator[np.ndarray]:
        """The epoch's full batches (before splitting across ranks)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.batches_per_epoch):
            if self.small_classes == "all":
                yield self._fill(rng)
                continue
            chosen = rng.choice(len(self.classes), self.per_batch, replace=False)
            yield np.concatenate([
                rng.choice(self.by_class[c], self.m, replace=len(self.by_class[c]) < self.m)
                for c in chosen
            ])

    def _fill(self, rng: np.random.Generator) -> np.ndarray:
        """One ``all`` batch: classes in random order, min(m, n) images each without
        replacement, until ``batch_size`` images; cut there."""
        parts, total = [], 0
        for c in rng.permutation(len(self.classes)):
            images = self.by_class[c]
            parts.append(rng.choice(images, min(self.m, len(images)), replace=False))
            total += len(parts[-1])
            if total >= self.batch_size:
                break
        return np.concatenate(parts)[: self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start_batch = self.start_batch, 0
        for b, batch in enumerate(self.global_batches()):
            if b >= start:
                yield self.local(batch)
