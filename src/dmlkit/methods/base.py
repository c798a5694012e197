"""The Method protocol: what is special about a training method, apart from the common loop.

The trainer owns the loop, optimizer, schedule, checkpoints and evaluation; a method owns its
losses, miners, regularizers and their state. Per iteration the trainer draws one batch from
each of the method's streams and calls ``steps``; every yielded dict of named losses is one
optimizer step (``"loss"`` is back-propagated, every entry is logged).

Under torch.distributed ``steps`` receives this rank's slice of each global batch; a method
passes embeddings, labels and sample indices through `dmlkit.base.process_group.gather` before
its miners and losses, so they see the global batch (identity on one process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dmlkit.config import TrainConfig
from dmlkit.data.m_per_class_sampler import MPerClassBatchSampler

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, labels, sample indices


class Method(nn.Module):
    """Base class: holds the training classes and maps labels to contiguous ids 0..C-1."""

    def __init__(self, classes: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("classes", torch.as_tensor(np.sort(classes), dtype=torch.long))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def contiguous(self, labels: torch.Tensor) -> torch.Tensor:
        """Dataset class ids -> 0..C-1 (losses with per-class parameters need these)."""
        return torch.searchsorted(self.classes, labels)

    def batch_samplers(self, labels: np.ndarray, cfg: TrainConfig) -> dict:
        """Named batch samplers over the training set (global batches; the trainer shards
        them across ranks); default: one M-per-class stream."""
        return {"class": MPerClassBatchSampler(
            labels, batch_size=cfg.batch_size, m=cfg.m_per_class,
            batches_per_epoch=cfg.batches_per_epoch, seed=cfg.seed,
        )}

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups for the method's own parameters (loss parameters, levels...)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "weight_decay": weight_decay, "name": "method"}] \
            if params else []

    def prepare(self, model: nn.Module, data, run_dir: Path, device: torch.device) -> None:
        """Work done once before training (e.g. Guided DML's master and targets)."""

    def steps(
        self, model: nn.Module, batches: dict[str, Batch], iteration: int
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Named losses, one dict per optimizer step; ``iteration`` counts within the epoch."""
        raise NotImplementedError

    def logs(self) -> dict[str, float]:
        """Method statistics to log once per epoch (e.g. MDR levels)."""
        return {}

    def validation_logs(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Numbers computed with the model after each epoch's training, logged in metrics.csv
        (e.g. Guided DML's held-out distillation loss)."""
        return {}

    def summary(self) -> dict:
        """Facts about the run written to metrics.json (e.g. Guided DML's stage-one timings)."""
        return {}

    def retrieval_variants(self) -> dict[str, str | list[str]]:
        """Other head(s) evaluated at the end, by name (the model's retrieval head aside)."""
        return {}
