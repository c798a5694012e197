"""Embedding heads: ``Linear(features -> dim)`` (optionally after ``Linear -> ReLU``, an MLP)
followed by an output mode; `NormalizedFeatures`, the identity "head" of the features themselves.

Output modes: ``l2`` (unit-norm embeddings), ``raw`` (the linear output), ``mean_distance``
(MDR's "learning without L2 norm": in training, divided by the batch's mean pairwise distance;
raw at eval).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmlkit.models.mean_distance_scaling import MeanDistanceScaling


class EmbeddingHead(nn.Module):
    """``x -> out(W x + b)`` with ``out`` the output mode; with ``hidden``:
    ``x -> out(W relu(V x + c) + b)``."""

    def __init__(self, in_features: int, dim: int = 128, output: str = "l2",
                 hidden: int | None = None) -> None:
        super().__init__()
        self.mlp = None
        if hidden is not None:
            self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU())
            in_features = hidden
        self.linear = nn.Linear(in_features, dim)
        self.output = output
        self.scale = MeanDistanceScaling() if output == "mean_distance" else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.linear(features if self.mlp is None else self.mlp(features))
        if self.output == "l2":
            return F.normalize(x, dim=-1)
        if self.scale is not None:
            return self.scale(x)
        return x


class NormalizedFeatures(nn.Module):
    """``x -> x / ||x||``: the features as they are (the zero-training anchor of a frozen
    backbone)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features.float(), dim=-1)
