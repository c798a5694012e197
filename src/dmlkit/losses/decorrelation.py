"""`DecorrelationLoss`: adversarial decorrelation of two embeddings (Sharing Matters, MIC).

A regressor R (Linear dim_s -> hidden, ReLU, Linear hidden -> dim_c) predicts the class embedding
phi_c from the shared embedding phi_s. With both inputs passed through gradient reversal:

    sim  = mean_{i, j} (phi_c[i, j] * normalize(R(phi_s))[i, j])^2,   loss = -sim.

Minimizing the loss trains R to predict phi_c from phi_s (R's parameters see the plain gradient of
-sim); the reversal hands the encoder the gradient of +sim, so it learns to make phi_c and phi_s
unpredictable from each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmlkit.errors import ConfigError
from dmlkit.losses.gradient_reversal import grad_reverse


class DecorrelationLoss(nn.Module):
    """``loss(phi_c, phi_s) = -sim`` (see module doc); both inputs (B, dim) already L2-normalized.

    The regressor is the submodule ``regressor`` (and this module's only parameters), so a method
    can give it its own optimizer param group (the paper: lr 1e-5, weight decay 1e-6).

    >>> loss_fn = DecorrelationLoss(dim_c=4, dim_s=3, hidden=8)
    >>> phi_c = F.normalize(torch.randn(5, 4), dim=1)
    >>> phi_s = F.normalize(torch.randn(5, 3), dim=1)
    >>> loss = loss_fn(phi_c, phi_s)
    >>> loss.shape, bool(-1 <= loss <= 0)
    (torch.Size([]), True)
    """

    def __init__(self, dim_c: int = 128, dim_s: int = 128, hidden: int = 512) -> None:
        super().__init__()
        self.dim_c, self.dim_s = dim_c, dim_s
        self.regressor = nn.Sequential(
            nn.Linear(dim_s, hidden), nn.ReLU(), nn.Linear(hidden, dim_c)
        )

    def forward(self, phi_c: torch.Tensor, phi_s: torch.Tensor) -> torch.Tensor:
        if phi_c.ndim != 2 or phi_s.ndim != 2 or len(phi_c) != len(phi_s):
            raise ValueError(
                "DecorrelationLoss expects phi_c (B, dim_c) and phi_s (B, dim_s) with the same B, "
                f"got {tuple(phi_c.shape)} and {tuple(phi_s.shape)}"
            )
        for name, x, dim in (("phi_c", phi_c, self.dim_c), ("phi_s", phi_s, self.dim_s)):
            if x.shape[1] != dim:
                raise ConfigError(
                    f"DecorrelationLoss: {name} has {x.shape[1]} dims but the regressor was built "
                    f"for dim_{name[-1]}={dim}: set it to the embedding head's size"
                )
        predicted = F.normalize(self.regressor(grad_reverse(phi_s)), dim=1)
        return -(grad_reverse(phi_c) * predicted).pow(2).mean()
