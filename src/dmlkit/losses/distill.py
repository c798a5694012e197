"""`EmbeddingDistillationLoss`: offline distillation onto fixed target embeddings (no labels).

    L = mean_b ||s_b - t_b||_2        (non-squared L2; "sum" and "none" reductions too)

where s is the student's embedding of a sample and t its cached target (Guided DML's reduced
hypothesis space, or any teacher's embedding). Targets are constants: gradients reach the student
only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dmlkit.errors import ConfigError

REDUCTIONS = ("mean", "sum", "none")


class EmbeddingDistillationLoss(nn.Module):
    """Per-sample L2 distance between student embeddings and targets, reduced over the batch.

    >>> loss = EmbeddingDistillationLoss()
    >>> float(loss(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.zeros(2, 2)))
    2.5
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, student: Tensor, target: Tensor) -> Tensor:
        """Loss between ``student`` (B x D) and ``target`` (B x D, detached)."""
        if student.ndim != 2 or student.shape != target.shape:
            raise ConfigError(
                f"student embeddings {tuple(student.shape)} and targets {tuple(target.shape)} "
                "must share one B x D shape (check the student's embedding dim)"
            )
        dist = torch.linalg.vector_norm(student - target.detach().to(student.dtype), dim=1)
        if self.reduction == "mean":
            return dist.mean()
        return dist.sum() if self.reduction == "sum" else dist
