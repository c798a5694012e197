"""`RandomBatchSampler`: a seeded permutation per epoch cut into batches (no labels used)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dmlkit.data.epoch_sampler import EpochBatchSampler
from dmlkit.errors import ConfigError, DataError


class RandomBatchSampler(EpochBatchSampler):
    """A torch ``batch_sampler``: epoch ``e`` is ``permutation(seed, e)`` cut into batches.

    The stream is a pure function of ``(seed, epoch)``; call ``set_epoch(epoch, start_batch)``
    before iterating: the iteration then starts at batch ``start_batch`` (exact mid-epoch resume).
    ``indices`` restricts sampling to those dataset indices (default: all ``num_samples``);
    ``drop_last=False`` keeps the last partial batch (as a torch ``DataLoader(shuffle=True)``).

    >>> s = RandomBatchSampler(5, 2, drop_last=False, indices=np.array([10, 11, 12, 13, 14]))
    >>> s.set_epoch(0)
    >>> sorted(len(b) for b in s), sorted(i for b in s for i in b)
    ([1, 2, 2], [10, 11, 12, 13, 14])
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0,
                 batches_per_epoch: int | None = None, *, indices: np.ndarray | None = None,
                 drop_last: bool = True) -> None:
        self.indices = np.arange(num_samples) if indices is None else np.asarray(indices)
        n = len(self.indices)
        if drop_last and n < batch_size:
            raise DataError(f"{n} training samples are fewer than one batch "
                            f"({batch_size}): lower train.batch_size")
        if n == 0:
            raise DataError("no training samples to draw batches from")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.drop_last = drop_last
        full = n // batch_size if drop_last else -(-n // batch_size)
        self.batches_per_epoch = min(batches_per_epoch or full, full)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def shard(self, rank: int, world_size: int) -> None:
        """As `EpochBatchSampler.shard`; a kept partial batch must split evenly too."""
        last = len(self.indices) % self.batch_size
        if not self.drop_last and last % world_size:
            raise ConfigError(f"the last partial batch ({last} samples) does not split over "
                              f"{world_size} ranks: drop it (student_drop_last=true)")
        super().shard(rank, world_size)

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start_batch = self.start_batch, 0
        rng = np.random.default_rng([self.seed, self.epoch])
        order = self.indices[rng.permutation(len(self.indices))]
        for b in range(start, self.batches_per_epoch):
            yield self.local(order[b * self.batch_size : (b + 1) * self.batch_size])
