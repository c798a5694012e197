"""`EpochBatchSampler`: the epoch bookkeeping shared by dmlkit's batch samplers.

A sampler's stream is a pure function of ``(seed, epoch)``; ``set_epoch(epoch, start_batch)``
selects it and where the next iteration starts (an exact mid-epoch resume).
"""

from __future__ import annotations

from dmlkit.errors import ConfigError


class EpochBatchSampler:
    """Base of the batch samplers: ``epoch``, ``start_batch`` and ``set_epoch``."""

    epoch: int = 0
    start_batch: int = 0

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
