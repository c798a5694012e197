"""Sharing Matters (Milbich, Roth et al., TPAMI 2020) as a two-stream method.

Per iteration, as the first author's code:
1. class batch (M per class): ``L_class(phi_c) + disw * L_dec(phi_c, phi_s)``, optimizer step;
2. shared batch (random images, a random surrogate label per block of M):
   ``L_shared(phi_s) + disw * L_dec(phi_c, phi_s)``, optimizer step.
Shared-stream triplets: positive = same surrogate label; negatives distance-weighted among
samples whose surrogate label and true class both differ from the anchor's. ``L_dec`` is the
gradient-reversed regressor loss (the encoder learns to make phi_c unpredictable from phi_s).
With ``combined_step`` both streams are summed into one optimizer step. Under
torch.distributed both heads, labels and true classes are gathered: the miners and losses see
the global batch, with the sampler's (global) surrogate labels.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from dmlkit.base.process_group import gather
from dmlkit.config import LossConfig, SharingConfig, TrainConfig
from dmlkit.data.surrogate_label_sampler import SurrogateLabelBatchSampler
from dmlkit.losses.by_name import build_loss, build_miner
from dmlkit.losses.decorrelation import DecorrelationLoss
from dmlkit.methods.base import Batch, Method
from dmlkit.miners.distance_weighted import DistanceWeightedMiner


class SharingMethod(Method):
    """Class head ``embedding`` + shared head ``shared`` of an EmbeddingModel."""

    def __init__(
        self, cfg: SharingConfig, class_loss: LossConfig, classes: np.ndarray, class_dim: int
    ) -> None:
        super().__init__(classes)
        self.cfg = cfg
        self.class_loss = build_loss(class_loss, self.num_classes, class_dim)
        self.class_miner = build_miner(class_loss)
        self.shared_loss = build_loss(cfg.shared_loss, cfg.num_surrogate_labels, cfg.shared_dim)
        self.shared_miner = DistanceWeightedMiner(
            cutoff=cfg.cutoff, nonzero_loss_cutoff=None, positives="one"
        )
        self.decorrelation = DecorrelationLoss(class_dim, cfg.shared_dim, cfg.regressor_hidden)
        self.loss_lr = class_loss.lr
        self.shared_sampler: SurrogateLabelBatchSampler | None = None

    def batch_samplers(self, labels, cfg: TrainConfig):
        samplers = super().batch_samplers(labels, cfg)
        self.shared_sampler = SurrogateLabelBatchSampler(
            len(labels), cfg.batch_size, cfg.m_per_class, self.cfg.num_surrogate_labels, cfg.seed
        )
        samplers["shared"] = self.shared_sampler
        return samplers

    def retrieval_variants(self) -> dict[str, str | list[str]]:
        """Both heads are evaluated: the shared head alone and the concatenation."""
        variants = {"shared": "shared", "concat": ["embedding", "shared"], "class": "embedding"}
        current = "class" if self.cfg.retrieval == "class" else "concat"
        return {k: v for k, v in variants.items() if k != current}

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Regressor (its own weight decay; its own lr if set, else the model's, as the official
        code) and loss parameters (class loss lr; the shared loss's own lr if set, else the class
        loss's)."""
        groups = [{"params": list(self.decorrelation.parameters()),
                   "lr": self.cfg.regressor_lr or lr,
                   "weight_decay": self.cfg.regressor_weight_decay, "name": "regressor"}]
        shared_lr = self.cfg.shared_loss.lr or self.loss_lr
        for name, loss, loss_lr in (("loss", self.class_loss, self.loss_lr),
                                    ("shared_loss", self.shared_loss, shared_lr)):
            params = list(loss.parameters())
            if params:
                groups.append({"params": params, "lr": loss_lr or lr, "weight_decay": 0.0,
                               "name": name})
        return groups

    def _class_step(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        images, labels, _ = batch
        out = model.embed_heads(images)
        phi_c, y = gather(out["embedding"]), gather(self.contiguous(labels))
        tuples = self.class_miner(phi_c, y) if self.class_miner is not None else None
        class_loss = self.class_loss(phi_c, y, tuples)
        dec = self.decorrelation(phi_c, gather(out["shared"]))
        return {"class_loss": class_loss, "decorrelation_class": dec,
                "loss": class_loss + self.cfg.decorrelation_weight * dec}

    def _shared_step(self, model: nn.Module, batch: Batch, iteration: int) -> dict:
        images, labels, _ = batch
        surrogate = self.shared_sampler.surrogate_labels(iteration).to(images.device)  # global
        out = model.embed_heads(images)
        phi_s = gather(out["shared"])
        tuples = self.shared_miner(phi_s, surrogate, exclude_labels=gather(labels))
        shared_loss = self.shared_loss(phi_s, surrogate, tuples)
        dec = self.decorrelation(gather(out["embedding"]), phi_s)
        return {"shared_loss": shared_loss, "decorrelation_shared": dec,
                "shared_triplets": torch.tensor(float(len(tuples[0]))),
                "loss": shared_loss + self.cfg.decorrelation_weight * dec}

    def steps(self, model: nn.Module, batches: dict[str, Batch], iteration: int) -> Iterator[dict]:
        first = self._class_step(model, batches["class"])
        if not self.cfg.combined_step:
            yield first
            yield self._shared_step(model, batches["shared"], iteration)
            return
        second = self._shared_step(model, batches["shared"], iteration)
        yield {**first, **second, "loss": first["loss"] + second["loss"]}
