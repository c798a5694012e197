"""`ComposedMethod`: a base metric loss on the retrieval head plus any subset of MDR, Sharing
Matters and Guided DML (docs/methods.md).

Class step (one optimizer step per iteration), on the class batch's gathered heads::

    loss_weight * L_metric(phi_c, y) + w_mdr * L_MDR(head) + w_g * L_distill(phi_c, t)
        + disw * L_dec(phi_c, phi_s)

(each term only with its part; MDR here when its head is ``embedding``). With Sharing, a second
step on the shared batch: ``L_shared(phi_s) + disw * L_dec(phi_c, phi_s)`` (+ MDR when its head is
``shared``); ``combined_step`` sums both into one step. Each part owns its parameters (its
optimizer groups), its state (in the method's state dict, hence in checkpoints) and its logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dmlkit.base.process_group import gather
from dmlkit.config import MethodConfig, TrainConfig
from dmlkit.errors import ConfigError
from dmlkit.losses.by_name import build_loss, build_miner
from dmlkit.methods.base import Batch, Method
from dmlkit.methods.guided import GuidedPart
from dmlkit.methods.mdr import MDRPart
from dmlkit.methods.sharing import SharingPart

Terms = tuple[dict[str, torch.Tensor], torch.Tensor]  # (logged values, weighted loss term)
HeadTerms = Callable[[dict[str, torch.Tensor]], Terms]  # gathered heads -> a part's terms


def check_composition(cfg: MethodConfig) -> None:
    """One ConfigError line for a combination that cannot train."""
    p = cfg.parts
    heads = ["embedding"] + (["shared"] if p.sharing is not None else [])
    if p.mdr is not None and p.mdr.head not in heads:
        need = " (the shared head needs method.parts.sharing)" if p.mdr.head == "shared" else ""
        raise ConfigError(f"method.parts.mdr.head {p.mdr.head!r} does not exist: heads are "
                          f"{', '.join(heads)}{need}")
    if cfg.loss_weight == 0 and p.guided is None:
        raise ConfigError("method.loss_weight=0 leaves the retrieval head without a loss: "
                          "add method.parts.guided (a distillation student) or a weight > 0")


class ComposedMethod(Method):
    """The base loss (``loss``, ``miner``) and the parts ``mdr``, ``sharing``, ``guided``
    (None when off). ``cache_dir``: where Guided DML's trained masters are kept (shared by
    every run that trains the same master; default: each run's own directory)."""

    def __init__(
        self, cfg: MethodConfig, classes: np.ndarray, embedding_dim: int, seed: int = 0,
        batch_size: int = 64, cache_dir: Path | None = None,
    ) -> None:
        super().__init__(classes)
        check_composition(cfg)
        p = cfg.parts
        self.loss_weight, self.loss_lr = cfg.loss_weight, cfg.loss.lr
        self.loss = build_loss(cfg.loss, self.num_classes, embedding_dim)
        self.miner = build_miner(cfg.loss)
        self.mdr = MDRPart(p.mdr) if p.mdr is not None else None
        self.sharing = SharingPart(p.sharing, embedding_dim, cfg.loss.lr) \
            if p.sharing is not None else None
        self.guided = GuidedPart(p.guided, self.classes, embedding_dim, seed, batch_size,
                                 labelled=cfg.loss_weight > 0, cache_dir=cache_dir) \
            if p.guided is not None else None

    # ------------------------------------------------------------------ set-up
    def batch_samplers(self, labels: np.ndarray, cfg: TrainConfig) -> dict:
        """``class``: M per class (random student batches without a metric loss); ``shared``
        with Sharing."""
        if self.loss_weight == 0:
            samplers = {"class": self.guided.class_batch_sampler(labels, cfg)}
        else:
            samplers = super().batch_samplers(labels, cfg)
        if self.sharing is not None:
            samplers["shared"] = self.sharing.shared_batch_sampler(labels, cfg)
        return samplers

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Loss parameters (``loss.lr``, no weight decay; only with a metric loss), then each
        part's groups."""
        groups = []
        loss_params = [p for p in self.loss.parameters() if p.requires_grad]
        if loss_params and self.loss_weight > 0:
            groups.append({"params": loss_params, "lr": self.loss_lr or lr, "weight_decay": 0.0,
                           "name": "loss"})
        if self.mdr is not None:
            groups += self.mdr.param_groups(lr, weight_decay)
        if self.sharing is not None:
            groups += self.sharing.param_groups(lr)
        return groups

    def prepare(self, model: nn.Module, data, run_dir: Path, device: torch.device) -> None:
        if self.guided is not None:
            self.guided.prepare(model, data, run_dir, device)

    # ------------------------------------------------------------------ steps
    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Terms:
        """The base loss of gathered embeddings with contiguous labels:
        (``{"metric_loss": L}``, ``loss_weight * L``)."""
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        value = self.loss(embeddings, labels, tuples)
        return {"metric_loss": value}, self.loss_weight * value

    def _mdr_on(self, head: str) -> HeadTerms | None:
        """MDR's terms on ``head`` of gathered heads (None when MDR is off or elsewhere)."""
        if self.mdr is None or self.mdr.head != head:
            return None
        return lambda heads: self.mdr.terms(heads[head])

    def class_step(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Named losses of the class batch; ``"loss"`` is their weighted sum."""
        images, labels, index = batch
        if self.sharing is None:  # the retrieval head is the embedding head
            heads = {"embedding": gather(model(images))}
        else:
            heads = {k: gather(v) for k, v in model.embed_heads(images).items()}
        terms: list[Terms] = []
        if self.loss_weight > 0:
            terms.append(self.compute(heads["embedding"], gather(self.contiguous(labels))))
        mdr = self._mdr_on("embedding")
        if mdr is not None:
            terms.append(mdr(heads))
        if self.guided is not None:
            terms.append(self.guided.terms(heads["embedding"], gather(index)))
        if self.sharing is not None:
            terms.append(self.sharing.class_terms(heads))
        out: dict[str, torch.Tensor] = {}
        for logged, _ in terms:
            out.update(logged)
        out["loss"] = sum((t for _, t in terms[1:]), terms[0][1])
        return out

    def steps(self, model: nn.Module, batches: dict[str, Batch], iteration: int) -> Iterator[dict]:
        """One step, or two with Sharing (class, then shared; one if ``combined_step``)."""
        first = self.class_step(model, batches["class"])
        if self.sharing is None:
            yield first
            return
        if not self.sharing.cfg.combined_step:
            yield first  # the class step is taken before the shared batch is embedded
        second = self.sharing.shared_step(model, batches["shared"], iteration,
                                          self._mdr_on("shared"))
        yield {**first, **second, "loss": first["loss"] + second["loss"]} \
            if self.sharing.cfg.combined_step else second

    # ------------------------------------------------------------------ reporting
    def logs(self) -> dict[str, float]:
        return self.mdr.logs() if self.mdr is not None else {}

    def validation_logs(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        return self.guided.validation_logs(model, device) if self.guided is not None else {}

    def summary(self) -> dict:
        return self.guided.summary() if self.guided is not None else {}

    def retrieval_variants(self) -> dict[str, str | list[str]]:
        return self.sharing.retrieval_variants() if self.sharing is not None else {}
