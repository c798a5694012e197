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
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import common_functions as c_f
from torch import Tensor

from dmlkit.errors import ConfigError, TrainingError

_LOG_FLOOR = 1e-8  # keeps log(1 - dist^2 / 4) finite for antipodal pairs (dist = 2)


class DistanceWeightedMiner(BaseMiner):
    """A PML miner: ``miner(embeddings, labels, ref_emb=None, ref_labels=None,
    exclude_labels=None) -> (anchors, positives, negatives)``.

    The output is PML's ``indices_tuple`` for triplets (LongTensors on the embeddings' device):
    anchors index ``embeddings``, positives and negatives index ``ref_emb`` (default: the
    embeddings themselves, then an anchor is never its own positive). It works wherever PML
    takes a miner, e.g. inside ``CrossBatchMemory`` (which passes its memory as ``ref_emb``).
    Anchors without a positive or without a valid negative are dropped; the output may be empty.
    ``exclude_labels`` (without ``ref_emb``) also forbids negatives sharing that label.

    Args:
        cutoff: lower clamp of the distances (limits the weight of very close negatives).
        nonzero_loss_cutoff: negatives at distance >= this get weight 0 (None: no upper cutoff).
        positives: ``"all"``: every ordered positive pair (a, p), a != p, gets one negative
            (MDR); ``"one"``: each anchor gets one uniformly drawn positive (margin-loss recipe of
            Wu et al. / Sharing Matters).
        generator: torch.Generator (on the embeddings' device) for reproducible draws.
        **kwargs: PML's (``distance``: an L2 ``LpDistance`` on normalized embeddings, the
            default; other distances are rejected as by PML's miner).

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
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        try:
            c_f.assert_distance_type(self, LpDistance, p=2, power=1, normalize_embeddings=True)
        except AssertionError:
            raise ConfigError(
                "distance-weighted miner: distance must be LpDistance(p=2, power=1, "
                "normalize_embeddings=True), as for PML's DistanceWeightedMiner"
            ) from None
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
        self,
        embeddings: Tensor,
        labels: Tensor,
        exclude_labels: Tensor | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """(N, M) matrix P with P[i, j] = probability that anchor i draws negative j of the
        reference set (M = N without ``ref_emb``). Rows with no valid negative are all zero.
        """
        with torch.no_grad():
            valid = _valid_negatives(embeddings, labels, exclude_labels, ref_emb, ref_labels)
            x = embeddings.detach().float()
            ref = x if ref_emb is None else ref_emb.detach().float()
            dist = self.distance(x, ref).clamp(min=self.cutoff)
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
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor,
        ref_labels: Tensor,
        exclude_labels: Tensor | None = None,
        anchors: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Anchor, positive and negative indices (PML's ``mine``); negatives differ in labels
        (and exclude_labels).

        ``anchors`` (``positives="one"``, without a separate ``ref_emb``): the usable anchors,
        from `usable_anchors` on the host; without it they are found on the device (one read
        of the device)."""
        with torch.no_grad():
            own = ref_emb is embeddings
            ref = (None, None) if own else (ref_emb, ref_labels)
            probs = self.negative_probabilities(embeddings, labels, exclude_labels, *ref)
            labels = labels.to(embeddings.device)
            same = labels[:, None] == ref_labels.to(embeddings.device)[None, :]
            if own:
                same.fill_diagonal_(False)
            if anchors is not None and self.positives == "one" and own:
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
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        exclude_labels: Tensor | None = None,
        anchors: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """PML's ``BaseMiner.forward`` (records ``num_triplets``), plus ``exclude_labels`` and
        host-computed ``anchors`` (both without ``ref_emb``)."""
        _valid_negatives(embeddings, labels, exclude_labels, ref_emb, ref_labels)  # checks
        if exclude_labels is None and anchors is None:
            return super().forward(embeddings, labels, ref_emb, ref_labels)
        if ref_emb is not None:
            raise TrainingError("miner: anchors work without ref_emb only")
        self.reset_stats()
        output = self.mine(embeddings, labels, embeddings, labels, exclude_labels, anchors)
        self.output_assertion(output)
        return output


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


def _valid_negatives(
    embeddings: Tensor,
    labels: Tensor,
    exclude_labels: Tensor | None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
) -> Tensor:
    """(N, M) bool: reference item j is a valid negative of i (different label and
    exclude-label)."""
    if embeddings.ndim != 2:
        raise TrainingError(
            f"miner expects embeddings of shape (N, dim), got {tuple(embeddings.shape)}"
        )
    if (ref_emb is None) != (ref_labels is None):
        raise TrainingError("miner: give both ref_emb and ref_labels, or neither")
    if ref_emb is not None and exclude_labels is not None:
        raise TrainingError("miner: exclude_labels works without ref_emb only")
    n = embeddings.shape[0]
    m = n if ref_emb is None else ref_emb.shape[0]
    if ref_emb is not None and ref_emb.shape[1:] != embeddings.shape[1:]:
        raise TrainingError(
            f"miner: ref_emb has shape {tuple(ref_emb.shape)}, embeddings {tuple(embeddings.shape)}"
        )
    for name, lab, size in (("labels", labels, n), ("exclude_labels", exclude_labels, n),
                            ("ref_labels", ref_labels, m)):
        if lab is not None and lab.shape != (size,):
            raise TrainingError(f"miner: {name} must have shape ({size},), got {tuple(lab.shape)}")
    ref_labels = labels if ref_labels is None else ref_labels
    device = embeddings.device
    valid = labels.to(device)[:, None] != ref_labels.to(device)[None, :]
    if exclude_labels is not None:
        exclude_labels = exclude_labels.to(device)
        valid &= exclude_labels[:, None] != exclude_labels[None, :]
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
