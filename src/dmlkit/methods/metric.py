"""The baseline method: embeddings -> miner -> pytorch-metric-learning loss (+ regularizer)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from dmlkit.base.process_group import gather
from dmlkit.config import LossConfig
from dmlkit.losses.by_name import build_loss, build_miner
from dmlkit.methods.base import Batch, Method


class MetricMethod(Method):
    """One optimizer step per iteration: ``loss(f(x), y, miner(f(x), y)) + w * reg(f(x))``.

    ``regularizer`` (e.g. MDR) is any module ``embeddings -> scalar``; with weight 0 the step's
    loss is exactly the base loss.
    """

    def __init__(
        self,
        loss: LossConfig,
        classes: np.ndarray,
        embedding_dim: int,
        regularizer: nn.Module | None = None,
        regularizer_weight: float = 0.0,
    ) -> None:
        super().__init__(classes)
        self.loss = build_loss(loss, self.num_classes, embedding_dim)
        self.miner = build_miner(loss)
        self.regularizer = regularizer
        self.regularizer_weight = regularizer_weight
        self.loss_lr = loss.lr

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        groups = []
        loss_params = [p for p in self.loss.parameters() if p.requires_grad]
        if loss_params:
            groups.append({"params": loss_params, "lr": self.loss_lr or lr, "weight_decay": 0.0,
                           "name": "loss"})
        if self.regularizer is not None:
            reg = [p for p in self.regularizer.parameters() if p.requires_grad]
            groups.append({"params": reg, "lr": lr, "weight_decay": weight_decay,
                           "name": "regularizer"})
        return groups

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named losses of one batch of embeddings with contiguous labels."""
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        out = {"metric_loss": self.loss(embeddings, labels, tuples)}
        total = out["metric_loss"]
        if self.regularizer is not None:
            out["regularizer"] = self.regularizer(embeddings)
            total = total + self.regularizer_weight * out["regularizer"]
        out["loss"] = total
        return out

    def logs(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in getattr(self.regularizer, "last_logs", {}).items():
            values = v.flatten().tolist()
            out.update({k: values[0]} if len(values) == 1 else
                       {f"{k}_{i}": x for i, x in enumerate(values)})
        return out

    def steps(self, model: nn.Module, batches: dict[str, Batch], iteration: int) -> Iterator[dict]:
        images, labels, _ = batches["class"]
        yield self.compute(gather(model(images)), gather(self.contiguous(labels)))
