"""The optimizer and the learning-rate schedule of a training run (``optim``)."""

from __future__ import annotations

import torch
from torch import nn

from dmlkit.config import Config
from dmlkit.methods.base import Method


def build_optimizer(cfg: Config, model: nn.Module, method: Method) -> torch.optim.Optimizer:
    """Model parameters plus the method's own groups (loss parameters, MDR levels, ...).

    Adam, AdamW and SGD without momentum are fused where the parameters are on the CPU or CUDA:
    one kernel, and a step skipped on the device (`dmlkit.engine.step`); SGD with momentum is
    not (a skipped first step would leave its momentum buffers unset)."""
    o = cfg.optim
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "name": "model"}]
    groups += method.param_groups(o.lr, o.weight_decay)
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay, fused=fused)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay, fused=fused)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               fused=fused and o.momentum == 0)
    return torch.optim.RMSprop(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer):
    """Per-epoch schedule; multistep milestones are fractions of ``train.epochs``."""
    o, epochs = cfg.optim, max(cfg.train.epochs, 1)
    if o.schedule == "multistep":
        milestones = sorted({max(1, round(f * epochs)) for f in o.milestones})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, o.gamma)
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    if o.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=o.gamma, patience=o.plateau_patience
        )
    return None
