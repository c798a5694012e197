"""`MPerClassBatchSampler`: batches of C classes x M images, with explicit epoch semantics."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dmlkit.errors import ConfigError, DataError


class MPerClassBatchSampler:
    """A torch ``batch_sampler`` yielding index lists of ``batch_size // m`` classes x ``m`` images.

    Epoch semantics: an epoch is ``batches_per_epoch`` batches (default
    ``len(labels) // batch_size``, i.e. about one pass over the data). Each batch draws its
    classes uniformly without replacement and, per class, ``m`` images without replacement (with
    replacement only for a class smaller than ``m``). The stream is a pure function of
    ``(seed, epoch)``: call ``set_epoch`` before iterating to resume exactly.

    ``rank``/``world_size`` split every global batch into contiguous per-rank slices, so the
    union over ranks is the batch one process would draw.
    """

    def __init__(
        self,
        labels,
        batch_size: int,
        m: int = 4,
        batches_per_epoch: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.labels = np.asarray(labels)
        if batch_size % m:
            raise ConfigError(f"batch_size {batch_size} must be a multiple of m_per_class {m}")
        self.classes, inverse = np.unique(self.labels, return_inverse=True)
        self.by_class = [np.flatnonzero(inverse == c) for c in range(len(self.classes))]
        self.batch_size, self.m, self.seed = batch_size, m, seed
        self.per_batch = batch_size // m
        if self.per_batch > len(self.classes):
            raise DataError(
                f"a batch of {batch_size} with m_per_class {m} needs {self.per_batch} classes, "
                f"but the training set has {len(self.classes)}: lower train.batch_size or raise "
                "train.m_per_class"
            )
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} not divisible by {world_size} ranks")
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = batches_per_epoch or max(1, len(self.labels) // batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def global_batches(self) -> Iterator[np.ndarray]:
        """The epoch's full batches (before splitting across ranks)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.batches_per_epoch):
            chosen = rng.choice(len(self.classes), self.per_batch, replace=False)
            yield np.concatenate([
                rng.choice(self.by_class[c], self.m, replace=len(self.by_class[c]) < self.m)
                for c in chosen
            ])

    def __iter__(self) -> Iterator[list[int]]:
        share = self.batch_size // self.world_size
        for batch in self.global_batches():
            yield batch[self.rank * share : (self.rank + 1) * share].tolist()
