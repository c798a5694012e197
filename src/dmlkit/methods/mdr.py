"""MDR as a part of a composed method: ``weight * L_MDR(head) + nu * sum_k s_k^2``.

The regularizer's own level penalty is multiplied by the part's weight in the step, so it is
built with ``nu / weight`` (the AAAI 2021 objective ``L_metric + lambda * L_MDR + nu * sum s^2``).
"""

from __future__ import annotations

import torch
from torch import nn

from dmlkit.config import MDRConfig
from dmlkit.losses.mdr import MDRRegularizer


class MDRPart(nn.Module):
    """MDR on the head ``cfg.head``: levels in the optimizer, statistics in the state."""

    def __init__(self, cfg: MDRConfig) -> None:
        super().__init__()
        self.head, self.weight = cfg.head, cfg.weight
        self.regularizer = MDRRegularizer(
            levels=cfg.levels,
            nu=cfg.nu / cfg.weight if cfg.weight > 0 else 0.0,
            momentum=cfg.momentum,
            include_diagonal=cfg.include_diagonal,
        )

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The learnable levels, at the model's lr and weight decay."""
        params = [p for p in self.regularizer.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "weight_decay": weight_decay, "name": "mdr"}]

    def terms(self, embeddings: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(logged ``{"mdr": L_MDR + penalty / weight}``, its weighted contribution)."""
        value = self.regularizer(embeddings)
        return {"mdr": value}, self.weight * value

    def logs(self) -> dict[str, float]:
        """The last batch's MDR statistics (levels, mean distance...), one number per key."""
        out: dict[str, float] = {}
        for k, v in self.regularizer.last_logs.items():
            values = v.flatten().tolist()
            out.update({k: values[0]} if len(values) == 1 else
                       {f"{k}_{i}": x for i, x in enumerate(values)})
        return out
