"""Gradient reversal (Ganin & Lempitsky 2015): identity forward, gradient times -scale backward.

y = x in the forward pass and dL/dx = -scale * dL/dy in the backward pass, so whatever minimizes
L downstream of the reversal, the layers upstream of it maximize (scale 1) L. Its backward is
linear in the incoming gradient, so it is differentiable again: a second derivative that passes
the reversal twice picks up a factor scale**2 (the sign flips back).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from dmlkit.errors import ConfigError


class GradientReversal(torch.autograd.Function):
    """``GradientReversal.apply(x, scale)``: forward y = x, backward grad_x = -scale * grad_y."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity on ``x`` whose gradient is multiplied by ``-scale`` (``scale`` finite, >= 0).

    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> (3 * grad_reverse(x, scale=0.5)).sum().backward()
    >>> x.grad
    tensor([-1.5000, -1.5000])
    """
    if not (math.isfinite(scale) and scale >= 0):
        raise ConfigError(f"gradient reversal scale must be finite and >= 0, got {scale}")
    return GradientReversal.apply(x, scale)


class GradientReversalLayer(nn.Module):
    """``grad_reverse`` as a module (for ``nn.Sequential``); ``scale`` may change in training."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
