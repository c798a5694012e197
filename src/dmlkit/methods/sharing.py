"""Sharing Matters (Milbich, Roth et al., TPAMI 2020) as a part of a composed method.

Per iteration, as the first author's code:
1. class batch (M per class): the base metric loss on phi_c (and the other parts' terms)
   ``+ disw * L_dec(phi_c, phi_s)``, optimizer step;
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

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dmlkit.base.process_group import gather
from dmlkit.config import SharingConfig, TrainConfig
from dmlkit.data.surrogate_label_sampler import SurrogateLabelBatchSampler
from dmlkit.losses.by_name import build_loss
from dmlkit.losses.decorrelation import DecorrelationLoss
from dmlkit.methods.base import Batch
from dmlkit.miners.distance_weighted import DistanceWeightedMiner, usable_anchors


class SharingPart(nn.Module):
    """Shared head ``shared`` of an EmbeddingModel: its stream, loss and the decorrelation."""

    def __init__(self, cfg: SharingConfig, class_dim: int, class_loss_lr: float | None) -> None:
        super().__init__()
        self.cfg, self.class_loss_lr = cfg, class_loss_lr
        self.shared_loss = build_loss(cfg.shared_loss, cfg.num_surrogate_labels, cfg.shared_dim)
        self.shared_miner = DistanceWeightedMiner(
            cutoff=cfg.cutoff, nonzero_loss_cutoff=None, positives="one"
        )
        self.decorrelation = DecorrelationLoss(class_dim, cfg.shared_dim, cfg.regressor_hidden)
        self.shared_sampler: SurrogateLabelBatchSampler | None = None
        self.train_labels: np.ndarray | None = None

    def shared_batch_sampler(self, labels: np.ndarray,
                             cfg: TrainConfig) -> SurrogateLabelBatchSampler:
        """The shared stream over the training set of classes ``labels``: random images, a
        surrogate label per block of ``m_per_class``."""
        self.train_labels = np.asarray(labels)
        self.shared_sampler = SurrogateLabelBatchSampler(
            len(labels), cfg.batch_size, cfg.m_per_class, self.cfg.num_surrogate_labels, cfg.seed
        )
        return self.shared_sampler

    def retrieval_variants(self) -> dict[str, str | list[str]]:
        """Both heads are evaluated: the shared head alone and the concatenation."""
        variants = {"shared": "shared", "concat": ["embedding", "shared"], "class": "embedding"}
        current = "class" if self.cfg.retrieval == "class" else "concat"
        return {k: v for k, v in variants.items() if k != current}

    def param_groups(self, lr: float) -> list[dict]:
        """Regressor (its own weight decay; its own lr if set, else the model's, as the official
        code) and the shared loss's parameters (its own lr if set, else the class loss's)."""
        groups = [{"params": list(self.decorrelation.parameters()),
                   "lr": self.cfg.regressor_lr or lr,
                   "weight_decay": self.cfg.regressor_weight_decay, "name": "regressor"}]
        params = list(self.shared_loss.parameters())
        if params:
            groups.append({"params": params,
                           "lr": self.cfg.shared_loss.lr or self.class_loss_lr or lr,
                           "weight_decay": 0.0, "name": "shared_loss"})
        return groups

    def class_terms(self, heads: dict[str, torch.Tensor]) -> tuple[dict, torch.Tensor]:
        """Class step: (logged ``decorrelation_class``, ``disw * L_dec``) of gathered heads."""
        dec = self.decorrelation(heads["embedding"], heads["shared"])
        return {"decorrelation_class": dec}, self.cfg.decorrelation_weight * dec

    def shared_step(self, model: nn.Module, batch: Batch, iteration: int,
                    extra: Callable[[dict], tuple[dict, torch.Tensor]] | None = None) -> dict:
        """Shared step's named losses; ``extra(heads) -> (logged, term)`` adds other parts'
        terms on this batch's gathered heads (e.g. MDR on the shared head)."""
        images, labels, _ = batch
        device = images.device
        surrogate = self.shared_sampler.surrogate_labels(iteration)  # global, on the host
        # the usable anchors are a function of the labels, known here: no read of the device
        true = self.train_labels[self.shared_sampler.global_batch(iteration)]
        anchors = torch.from_numpy(usable_anchors(surrogate.numpy(), true))
        surrogate = surrogate.to(device, non_blocking=True)
        out = model.embed_heads(images)
        heads = {"embedding": gather(out["embedding"]), "shared": gather(out["shared"])}
        phi_s = heads["shared"]
        tuples = self.shared_miner(phi_s, surrogate, exclude_labels=gather(labels),
                                   anchors=anchors.to(device, non_blocking=True))
        shared_loss = self.shared_loss(phi_s, surrogate, tuples)
        dec = self.decorrelation(heads["embedding"], phi_s)
        logged = {"shared_loss": shared_loss, "decorrelation_shared": dec,  # on the device
                  "shared_triplets": torch.full((), float(len(anchors)), device=device)}
        loss = shared_loss + self.cfg.decorrelation_weight * dec
        if extra is not None:
            more, term = extra(heads)
            logged.update(more)
            loss = loss + term
        return {**logged, "loss": loss}
