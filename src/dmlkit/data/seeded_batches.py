"""`SeededBatches`: a batch sampler's batches as ``(index, seed)`` pairs, one seed per position.

The per-sample path (a DataLoader over `ImageDataset`) draws each sample's random augmentation
from torch's generator seeded with its pair's seed (`ImageDataset.__getitem__`). Seed of
position ``p`` of global batch ``b`` of epoch ``e``: ``batch_seeds(seed, stream, e, b, n)[p]``,
a pure function of the position, so the batches do not depend on how many worker processes
decode them, whether the workers persist across epochs, on the number of ranks (a rank's slice
keeps its global positions) or on a mid-epoch resume.
"""

from __future__ import annotations

from collections.abc import Iterator

from dmlkit.data.device_batches import batch_seeds
from dmlkit.data.epoch_sampler import EpochBatchSampler


class SeededBatches:
    """Batch sampler yielding ``[(index, seed), ...]`` for the batches of ``sampler`` (its
    current ``epoch`` from its ``start_batch``; `EpochBatchSampler.set_epoch` selects them)."""

    def __init__(self, sampler: EpochBatchSampler, seed: int, stream: int = 0) -> None:
        self.sampler, self.seed, self.stream = sampler, seed, stream

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        s = self.sampler
        epoch, start = s.epoch, s.start_batch
        for b, local in enumerate(s, start=start):
            n = len(local)
            offset = s.rank * n
            seeds = batch_seeds(self.seed, self.stream, epoch, b, offset + n)[offset:]
            yield [(int(i), seed) for i, seed in zip(local, seeds, strict=True)]
