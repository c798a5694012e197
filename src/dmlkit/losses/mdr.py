"""Multi-level Distance Regularization (MDR; Kim & Park, AAAI 2021) as a PML embedding regularizer.

For a batch f_1..f_N with pairwise distances D_ij = ||f_i - f_j||_2:

    mu_b, sigma_b = mean(D), std(D)                    batch statistics, detached
    mu <- m mu + (1 - m) mu_b,  sigma <- m sigma + (1 - m) sigma_b   (first batch: mu = mu_b, ...)
    d_ij = (D_ij - mu) / sigma                          for i != j
    L = mean_{i != j} min_k |d_ij - s_k|  +  nu sum_k s_k^2

with learnable levels s (default (-3, 0, 3)) and momentum m = 0.9. See docs/mdr.md.
"""

from collections.abc import Sequence

import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.regularizers import BaseRegularizer
from torch import Tensor, nn

from dmlkit.base.distances import pairwise_distances
from dmlkit.errors import ConfigError, TrainingError

_SIGMA_FLOOR = 1e-12


class MDRRegularizer(BaseRegularizer):
    """MDR loss on raw (not L2-normalized) embeddings; also a PML ``embedding_regularizer``.

    ``reg(embeddings)`` returns ``L_MDR + nu * sum_k s_k^2`` (a scalar); the two parts, the levels
    and the statistics of the last call are in ``last_logs``. Statistics are updated only in
    training mode. In eval mode the stored statistics are used as they are (or, before the first
    training batch, the current batch's).

    As ``embedding_regularizer=reg, embedding_reg_weight=lam`` of a PML loss, PML adds
    ``lam * reg(embeddings)``, so the penalty is scaled by lam too: the paper's total
    ``L_base + lam L_MDR + nu' sum_k s_k^2`` is obtained with ``nu = nu' / lam``.

    Args:
        levels: initial levels s_k, in units of sigma (learnable).
        nu: weight of the L2 penalty on the levels.
        momentum: m in the moving averages of mu and sigma.
        include_diagonal: compute mu_b, sigma_b over all N^2 entries of D including the N zeros
            of its diagonal (as the official code does); False uses the N(N-1) pairs i != j.
        distance: PML's convention; MDR needs Euclidean distances, so an
            ``LpDistance(p=2, power=1)`` (default ``normalize_embeddings=False``, the paper's;
            True regularizes the distances of L2-normalized embeddings).
        reducer: PML's convention; the MDR loss is already a mean over pairs, so only
            ``MeanReducer`` (the default) makes sense.

    >>> reg = MDRRegularizer()
    >>> loss = reg(torch.randn(8, 4))
    >>> loss.shape, bool(reg.initialized)
    (torch.Size([]), True)
    """

    def __init__(
        self,
        levels: Sequence[float] = (-3.0, 0.0, 3.0),
        nu: float = 0.01,
        momentum: float = 0.9,
        include_diagonal: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        distance = self.distance
        if not (isinstance(distance, LpDistance) and distance.p == 2 and distance.power == 1):
            raise ConfigError(
                f"MDR regularizes Euclidean distances: distance must be LpDistance(p=2, power=1),"
                f" got {distance!r}"
            )
        if type(self.reducer) is not MeanReducer:
            raise ConfigError(
                f"MDR's loss is already a mean over pairs: reducer {type(self.reducer).__name__}"
                " makes no sense for MDR (use MeanReducer or leave it out)"
            )
        if len(levels) == 0:
            raise ConfigError("MDR needs at least one level")
        if nu < 0:
            raise ConfigError(f"MDR nu must be >= 0, got {nu}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"MDR momentum must be in [0, 1], got {momentum}")
        self.levels = nn.Parameter(torch.tensor([float(s) for s in levels]))
        self.nu = float(nu)
        self.momentum = float(momentum)
        self.include_diagonal = include_diagonal
        self.register_buffer("mu", torch.zeros(()))
        self.register_buffer("sigma", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.last_logs: dict[str, Tensor] = {}

    def get_default_distance(self) -> LpDistance:
        """Euclidean distances of the raw embeddings (PML hook)."""
        return LpDistance(p=2, power=1, normalize_embeddings=False)

    def level_penalty(self) -> Tensor:
        """nu * sum_k s_k^2."""
        return self.nu * self.levels.pow(2).sum()

    def compute_loss(self, x: Tensor) -> dict[str, dict]:
        """PML hook: the already-reduced MDR loss (plus the level penalty) of embeddings x."""
        return {
            "loss": {"losses": self._loss(x), "indices": None, "reduction_type": "already_reduced"}
        }

    @torch.no_grad()
    def _update_statistics(self, dist: Tensor) -> tuple[Tensor, Tensor]:
        """Batch mean/std of D, folded into the moving averages in training mode (selected
        with ``torch.where`` on the ``initialized`` flag: no read of the device)."""
        values = dist.flatten() if self.include_diagonal else _off_diagonal(dist)
        mu_b = values.mean().to(self.mu.dtype)
        sigma_b = values.std().to(self.sigma.dtype)
        init = self.initialized
        if not self.training:
            return torch.where(init, self.mu, mu_b), torch.where(init, self.sigma, sigma_b)
        m = self.momentum
        self.mu.copy_(torch.where(init, self.mu * m + (1.0 - m) * mu_b, mu_b))
        self.sigma.copy_(torch.where(init, self.sigma * m + (1.0 - m) * sigma_b, sigma_b))
        self.initialized.fill_(True)
        return self.mu, self.sigma

    def _loss(self, x: Tensor) -> Tensor:
        if x.ndim != 2:
            raise TrainingError(f"MDR expects embeddings of shape (N, dim), got {tuple(x.shape)}")
        penalty = self.level_penalty()
        mu, sigma = self.mu, self.sigma
        if x.shape[0] < 2:  # no pair: nothing to regularize, statistics untouched
            mdr = (x * 0).sum()
        else:
            dist = pairwise_distances(self.distance.maybe_normalize(x))
            mu, sigma = self._update_statistics(dist)
            normalized = (_off_diagonal(dist) - mu) / sigma.clamp(min=_SIGMA_FLOOR)
            mdr = (normalized[:, None] - self.levels[None, :]).abs().min(dim=1).values.mean()
        self.last_logs = {
            "mdr": mdr.detach(),
            "mdr_level_penalty": penalty.detach(),
            "mdr_levels": self.levels.detach().clone(),
            "mdr_mu": mu.clone(),
            "mdr_sigma": sigma.clone(),
        }
        return mdr + penalty


def _off_diagonal(matrix: Tensor) -> Tensor:
    """The N(N-1) entries with i != j, row-major. Without the first entry, the flat matrix is
    N-1 rows of N+1 entries each ending on a diagonal entry: drop that column (a view, no
    data-dependent shape)."""
    n = matrix.shape[0]
    return matrix.flatten()[1:].view(n - 1, n + 1)[:, :-1].flatten()
