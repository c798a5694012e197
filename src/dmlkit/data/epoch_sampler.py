"""`EpochBatchSampler`: the epoch and rank bookkeeping shared by dmlkit's batch samplers.

A sampler's stream is a pure function of ``(seed, epoch)``; ``set_epoch(epoch, start_batch)``
selects it and where the next iteration starts (an exact mid-epoch resume). Under
torch.distributed every rank builds the same sampler (same seed) and ``shard(rank,
world_size)`` makes it yield rank ``rank``'s contiguous slice of each global batch: the slices,
concatenated in rank order, are the batch one process would draw.
"""

from __future__ import annotations

from collections.abc import Sequence

from dmlkit.errors import ConfigError


def check_shardable(batch_size: int, world_size: int) -> None:
    """ConfigError unless every one of ``world_size`` ranks can take an equal slice."""
    if batch_size % world_size:
        raise ConfigError(f"train.batch_size {batch_size} is not divisible by {world_size} "
                          "ranks: every rank takes an equal slice")


def check_blocks(batch_size: int, m: int, names: tuple[str, str] = ("batch_size ", "m ")) -> None:
    """ConfigError unless a batch of ``batch_size`` images splits into blocks of ``m`` (classes
    x M images, or surrogate-label blocks); ``names``: how the message introduces the two
    numbers (``"batch_size "``, ``"train.batch_size="``)."""
    if batch_size % m:
        below = batch_size - batch_size % m
        sizes = f"{below} or {below + m}" if below else str(m)
        raise ConfigError(f"{names[0]}{batch_size} is not a multiple of {names[1]}{m} (a batch "
                          f"is blocks of {m} images): use e.g. {names[0]}{sizes}")


class EpochBatchSampler:
    """Base of the batch samplers: ``epoch``, ``start_batch``, ``set_epoch`` and ``shard``."""

    epoch: int = 0
    start_batch: int = 0
    rank: int = 0
    world_size: int = 1
    batch_size: int

    def __len__(self) -> int:
        raise NotImplementedError

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select epoch ``epoch``'s stream; the next iteration starts at batch ``start_batch``."""
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise ConfigError(
                f"set_epoch({epoch}, start_batch={start_batch}): need epoch >= 0 and "
                f"0 <= start_batch <= {len(self)}"
            )
        self.epoch, self.start_batch = epoch, start_batch

    def shard(self, rank: int, world_size: int) -> None:
        """Yield rank ``rank``'s slice (``batch_size / world_size`` indices) of every batch."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} of {world_size}: need 0 <= rank < world_size")
        check_shardable(self.batch_size, world_size)
        self.rank, self.world_size = rank, world_size

    def local(self, batch: Sequence[int]) -> list[int]:
        """This rank's contiguous slice of a global batch (all of it on one process)."""
        share = len(batch) // self.world_size
        return [int(i) for i in batch[self.rank * share : (self.rank + 1) * share]]
