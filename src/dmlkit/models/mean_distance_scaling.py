"""MDR's "learning without L2 norm": scale a training batch to unit mean pairwise distance.

Training mode: x_i / mean_{i != j} ||x_i - x_j||_2 over the current batch; the divisor is part
of the graph (not detached), so gradients flow through it. Eval mode: x unchanged (raw
embeddings, no division, no L2 normalization). A training batch of one sample has no pair and
is returned unchanged.
"""

from torch import Tensor, nn

from dmlkit.losses.mdr import pairwise_distances


class MeanDistanceScaling(nn.Module):
    """x -> x / mean_{i != j} D_ij in training mode, x in eval mode.

    >>> import torch
    >>> scale = MeanDistanceScaling()
    >>> scale(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    tensor([[0.0000, 0.0000],
            [0.6000, 0.8000]])
    >>> scale.eval()(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    tensor([[0., 0.],
            [3., 4.]])
    """

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if not self.training or n < 2:
            return x
        mean_distance = pairwise_distances(x).sum() / (n * (n - 1))  # D_ii = 0
        return x / mean_distance
