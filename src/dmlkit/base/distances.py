"""Distances between embeddings, shared by losses, miners and heads."""

from __future__ import annotations

import torch
from torch import Tensor


def pairwise_distances(x: Tensor, eps: float = 1e-12) -> Tensor:
    """D_ij = sqrt(max(||x_i||^2 + ||x_j||^2 - 2 x_i.x_j, eps)), with D_ii = 0 exactly.

    Differentiable everywhere (the clamp keeps the sqrt away from 0).

    >>> pairwise_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    tensor([[0., 5.],
            [5., 0.]])
    """
    sq_norms = x.pow(2).sum(dim=1)
    squared = sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T)
    dist = squared.clamp(min=eps).sqrt()
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return dist.masked_fill(eye, 0.0)
