"""`RandomBatchSampler`: a seeded permutation per epoch cut into batches (no labels used)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dmlkit.data.epoch_sampler import EpochBatchSampler
from dmlkit.errors import DataError


class RandomBatchSampler(EpochBatchSampler):
    """A torch ``batch_sampler``: epoch ``e`` is ``permutation(seed, e)`` cut into full batches.

    The stream is a pure function of ``(seed, epoch)``; call ``set_epoch(epoch, start_batch)``
    before iterating: the iteration then starts at batch ``start_batch`` (exact mid-epoch resume).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0,
                 batches_per_epoch: int | None = None) -> None:
        if num_samples < batch_size:
            raise DataError(f"{num_samples} training samples are fewer than one batch "
                            f"({batch_size}): lower train.batch_size")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.batches_per_epoch = min(batches_per_epoch or num_samples // batch_size,
                                     num_samples // batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start_batch = self.start_batch, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        for b in range(start, self.batches_per_epoch):
            yield self.local(order[b * self.batch_size : (b + 1) * self.batch_size])
