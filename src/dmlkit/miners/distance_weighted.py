"""Distance-weighted negative sampling (Wu et al., ICCV 2017), vectorized, with optional
exclusion labels (Sharing Matters' shared-stream negatives).

On an L2-normalized copy of the embeddings, with dist_ij = max(||x_i - x_j||, cutoff) and
embedding dimension d, the negative j of anchor i is drawn with probability proportional to

    w_ij = 1 / q(dist_ij),  log w_ij = (2 - d) log dist_ij - ((d - 3) / 2) log(1 - dist_ij^2 / 4)

(q is the density of distances between uniform points on the unit sphere), restricted to valid
negatives (a different label, and a different exclude-label if given) with
dist_ij < nonzero_loss_cutoff. A row whose valid negatives are all cut falls back to uniform
over its valid negatives. Each anchor-positive pair gets one negative.
"""

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmlkit.base.distances import pairwise_distances
from dmlkit.errors import ConfigError, TrainingError

_LOG_FLOOR = 1e-8  # keeps log(1 - dist^2 / 4) finite for antipodal pairs (dist = 2)


class DistanceWeightedMiner(nn.Module):
    """``miner(embeddings, labels, exclude_labels=None) -> (anchors, positives, negatives)``.

    The output is PML's ``indices_tuple`` for triplets (LongTensors on the embeddings' device).
    Anchors without a positive or without a valid negative are dropped; the output may be empty.

    Args:
        cutoff: lower clamp of the distances (limits the weight of very close negatives).
        nonzero_loss_cutoff: negatives at distance >= this get weight 0 (None: no upper cutoff).
        positives: ``"all"``: every ordered positive pair (a, p), a != p, gets one negative
            (MDR); ``"one"``: each anchor gets one uniformly drawn positive (margin-loss recipe of
            Wu et al. / Sharing Matters).
        generator: torch.Generator (on the embeddings' device) for reproducible draws.

    >>> miner = DistanceWeightedMiner(generator=torch.Generator().manual_seed(0))
    >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> miner(emb, torch.tensor([0, 0, 1, 1]))[0].tolist()
    [0, 1, 2, 3]
    """

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float | None = 1.4,
        positives: Literal["all", "one"] = "all",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if cutoff < 0:
            raise ConfigError(f"distance-weighted miner: cutoff must be >= 0, got {cutoff}")
        if nonzero_loss_cutoff is not None and nonzero_loss_cutoff <= cutoff:
            raise ConfigError(
                f"distance-weighted miner: nonzero_loss_cutoff ({nonzero_loss_cutoff}) must "
                f"exceed cutoff ({cutoff})"
            )
        if positives not in ("all", "one"):
            raise ConfigError(
                f"distance-weighted miner: positives must be 'all' or 'one', got {positives!r}"
            )
        self.cutoff = float(cutoff)
        self.nonzero_loss_cutoff = (
            None if nonzero_loss_cutoff is None else float(nonzero_loss_cutoff)
        )
        self.positives = positives
        self.generator = generator

    def negative_probabilities(
        self, embeddings: Tensor, labels: Tensor, exclude_labels: Tensor | None = None
    ) -> Tensor:
        """(N, N) matrix P with P[i, j] = probability that anchor i draws negative j.

        Rows of anchors with no valid negative are all zero.
        """
        with torch.no_grad():
            valid = _valid_negatives(embeddings, labels, exclude_labels)
            x = F.normalize(embeddings.detach().float(), dim=1)
            dist = pairwise_distances(x).clamp(min=self.cutoff)
            d = float(x.shape[1])
            log_shell = (1.0 - dist.pow(2) / 4.0).clamp(min=_LOG_FLOOR).log()
            log_w = (2.0 - d) * dist.log() - ((d - 3.0) / 2.0) * log_shell
            kept = valid
            if self.nonzero_loss_cutoff is not None:
                kept = valid & (dist < self.nonzero_loss_cutoff)
            log_w = log_w.masked_fill(~kept, float("-inf"))
            row_max = log_w.amax(dim=1, keepdim=True)
            weights = (log_w - row_max.nan_to_num(neginf=0.0)).exp()  # row max -> weight 1
            all_cut = valid.any(dim=1) & ~kept.any(dim=1)
            weights = torch.where(all_cut[:, None], valid.float(), weights)
            total = weights.sum(dim=1, keepdim=True)
            return weights / total.clamp(min=torch.finfo(weights.dtype).tiny)

    def mine(
        self, embeddings: Tensor, labels: Tensor, exclude_labels: Tensor | None = None,
        anchors: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Anchor, positive and negative indices; negatives differ in labels and exclude_labels.

        ``anchors`` (``positives="one"`` only): the usable anchors, from `usable_anchors` on
        the host; without it they are found on the device (one read of the device)."""
        with torch.no_grad():
            probs = self.negative_probabilities(embeddings, labels, exclude_labels)
            labels = labels.to(embeddings.device)
            same = labels[:, None] == labels[None, :]
            same.fill_diagonal_(False)
            if anchors is not None and self.positives == "one":
                anchors = anchors.to(embeddings.device)
                positives = _draw(same[anchors].float(), self.generator)
                return anchors, positives, _draw(probs[anchors], self.generator)
            usable = same.any(dim=1) & (probs.sum(dim=1) > 0)
            if self.positives == "all":
                anchors, positives = (same & usable[:, None]).nonzero(as_tuple=True)
            else:
                anchors = usable.nonzero().flatten()
                positives = _draw(same[anchors].float(), self.generator)
            return anchors, positives, _draw(probs[anchors], self.generator)

    def forward(
        self, embeddings: Tensor, labels: Tensor, exclude_labels: Tensor | None = None,
        anchors: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Same as :meth:`mine`."""
        return self.mine(embeddings, labels, exclude_labels, anchors)


def usable_anchors(labels: np.ndarray, exclude_labels: np.ndarray | None = None) -> np.ndarray:
    """Indices of the anchors with a positive (same label) and a valid negative (different
    label and exclude-label): a function of the labels alone (a negative cut by the distance
    cutoffs falls back to uniform), so computed on the host where the labels are known there.

    >>> usable_anchors(np.array([0, 0, 1, 2])).tolist()
    [0, 1]
    """
    labels = np.asarray(labels)
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    valid = ~(labels[:, None] == labels[None, :])
    if exclude_labels is not None:
        exclude_labels = np.asarray(exclude_labels)
        valid &= exclude_labels[:, None] != exclude_labels[None, :]
    return np.flatnonzero(same.any(axis=1) & valid.any(axis=1))


def _valid_negatives(embeddings: Tensor, labels: Tensor, exclude_labels: Tensor | None) -> Tensor:
    """(N, N) bool: j is a valid negative of i (different label and exclude-label)."""
    if embeddings.ndim != 2:
        raise TrainingError(
            f"miner expects embeddings of shape (N, dim), got {tuple(embeddings.shape)}"
        )
    n = embeddings.shape[0]
    valid = torch.ones(n, n, dtype=torch.bool, device=embeddings.device)
    for name, lab in (("labels", labels), ("exclude_labels", exclude_labels)):
        if lab is None:
            continue
        if lab.shape != (n,):
            raise TrainingError(f"miner: {name} must have shape ({n},), got {tuple(lab.shape)}")
        lab = lab.to(embeddings.device)
        valid &= lab[:, None] != lab[None, :]
    return valid


def _draw(weights: Tensor, generator: torch.Generator | None) -> Tensor:
    """One column index per row of ``weights``. A row without a positive finite weight (from
    non-finite embeddings, whose step is skipped) draws uniformly: checked on the device, as
    CUDA's multinomial cannot report it."""
    if weights.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=weights.device)
    weights = weights.nan_to_num(0.0, 0.0, 0.0).clamp(min=0)
    weights = torch.where(weights.sum(dim=1, keepdim=True) > 0, weights, 1.0)
    return torch.multinomial(weights, 1, generator=generator).flatten()
