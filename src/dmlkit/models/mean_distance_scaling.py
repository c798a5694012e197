"""MDR's "learning without L2 norm": scale a training batch to unit mean pairwise distance.

Training mode: x_i / mean_{i != j} ||x_i - x_j||_2 over the current batch; the divisor is part
of the graph (not detached), so gradients flow through it. Eval mode: x unchanged (raw
embeddings, no division, no L2 normalization). A training batch of one sample has no pair and
is returned unchanged. Under torch.distributed the mean runs over the global batch (every
rank's slice gathered, gradients included), as on one process.
"""

import torch
from torch import Tensor, nn

from dmlkit.base.distances import pairwise_distances
from dmlkit.base.process_group import gather


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
        if not self.training:
            return x
        with torch.autocast(x.device.type, enabled=False):  # distances in float32 under AMP
            x = x.to(torch.promote_types(x.dtype, torch.float32))
            batch = gather(x)
            n = batch.shape[0]
            if n < 2:
                return x
            mean_distance = pairwise_distances(batch).sum() / (n * (n - 1))  # D_ii = 0
            return x / mean_distance
