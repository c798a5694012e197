"""`GuidedMasterLoss`: the Guided DML master's loss (triplet term plus branch-feature compaction).

    L = (1 - beta) * mean_b max(0, ||a_b - p_b||_2 - ||a_b - n_b||_2 + margin)
        + beta * mean_b ||u_b - v_b||_2

where (a, p, n) are the master's embeddings of a triplet block and (u, v) the flattened branch
features of the anchor and positive. Distances are exact (torch's ``triplet_margin_loss`` with
``eps=0``; its default eps=1e-6 is added to the difference before the norm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmlkit.errors import ConfigError


class GuidedMasterLoss(nn.Module):
    """(1 - beta) * triplet margin loss + beta * mean anchor-positive branch-feature distance.

    After each call ``last_terms`` holds the detached parts ``{"triplet", "compaction"}``.

    >>> loss = GuidedMasterLoss(margin=3.0, beta=0.5)
    >>> a, p, n = torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])
    >>> float(loss(a, p, n, torch.zeros(1, 4), torch.ones(1, 4)))  # 0.5 * 0 + 0.5 * 2
    1.0
    """

    def __init__(self, margin: float = 3.0, beta: float = 0.003) -> None:
        super().__init__()
        if margin < 0:
            raise ConfigError(f"margin must be >= 0, got {margin}")
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {beta}")
        self.margin = margin
        self.beta = beta
        self.last_terms: dict[str, Tensor] = {}

    def forward(
        self,
        anchor: Tensor,
        positive: Tensor,
        negative: Tensor,
        anchor_features: Tensor,
        positive_features: Tensor,
    ) -> Tensor:
        """Scalar loss over a batch of B triplets (embeddings B x D, branch features B x ...)."""
        if anchor.ndim != 2 or anchor.shape != positive.shape or anchor.shape != negative.shape:
            raise ConfigError(
                "anchor, positive and negative embeddings must share one B x D shape, got "
                f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
            )
        u, v = anchor_features.flatten(1), positive_features.flatten(1)
        if u.shape != v.shape or len(u) != len(anchor):
            raise ConfigError(
                f"branch features {tuple(anchor_features.shape)} and "
                f"{tuple(positive_features.shape)} must match the {len(anchor)} triplets"
            )
        triplet = F.triplet_margin_loss(anchor, positive, negative, margin=self.margin, eps=0.0)
        compaction = torch.linalg.vector_norm(u - v, dim=1).mean()
        self.last_terms = {"triplet": triplet.detach(), "compaction": compaction.detach()}
        return (1.0 - self.beta) * triplet + self.beta * compaction
