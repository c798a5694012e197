"""`DeviceBatches`: a batch sampler's batches of a batched in-memory dataset, built on the device.

It replaces the DataLoader for `ImageDataset.batched` datasets: each batch is one index
operation and a few tensor operations (`BatchTransform`), with no per-sample Python.
The random draws of batch ``b`` of epoch ``e`` come from a generator seeded with
``(seed, stream, e, b)``: a pure function of the position (the sampler's stream is one of
``(seed, epoch)``), so a run resumed mid-epoch draws what the uninterrupted run drew, and no
global RNG is touched. Draws cover the global batch; each rank transforms its slice with the
draws one process would use for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from dmlkit.data.dataset import ImageDataset
from dmlkit.data.epoch_sampler import EpochBatchSampler


def batch_seeds(seed: int, stream: int, epoch: int, batch: int, count: int) -> list[int]:
    """``count`` 63-bit generator seeds for one batch position (NumPy SeedSequence hashing);
    the first ``k`` do not depend on ``count``."""
    sequence = np.random.SeedSequence([seed % 2**63, stream, epoch, batch])
    return [int(s) >> 1 for s in sequence.generate_state(count, np.uint64)]


def batch_seed(seed: int, stream: int, epoch: int, batch: int) -> int:
    """A 63-bit generator seed for one batch position (the first of `batch_seeds`)."""
    return batch_seeds(seed, stream, epoch, batch, 1)[0]


class DeviceBatches:
    """Iterable of ``(images, labels, indices)`` on ``device`` for the batches of ``sampler``
    (from its ``start_batch`` of its ``epoch``), like ``DataLoader(dataset, batch_sampler=...)``."""

    def __init__(self, dataset: ImageDataset, sampler: EpochBatchSampler,
                 device: torch.device, seed: int, stream: int = 0) -> None:
        self.dataset, self.sampler, self.device = dataset, sampler, torch.device(device)
        self.seed, self.stream = seed, stream

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        epoch, start = self.sampler.epoch, self.sampler.start_batch
        world = self.sampler.world_size
        random = self.dataset.batch_transform.random
        for b, local in enumerate(self.sampler, start=start):
            generator = None
            if random:
                generator = torch.Generator(device=self.device)
                generator.manual_seed(batch_seed(self.seed, self.stream, epoch, b))
            n = len(local)
            yield self.dataset.batch(torch.as_tensor(local, dtype=torch.long), self.device,
                                     generator, offset=self.sampler.rank * n, total=world * n)
