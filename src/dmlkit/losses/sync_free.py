"""PML reducers and the triplet-margin miner without host-device syncs (docs/gpu.md).

PML's ``DivisorReducer`` reads its divisor on the host (``divisor != 0``, an fp16 NaN check),
``ThresholdReducer`` / ``AvgNonZeroReducer`` index the losses with a boolean mask (a
data-dependent size, forward and backward) and ``TripletMarginMiner`` selects its triplets in
four data-dependent steps: each is a full CUDA synchronization. These subclasses compute the
same values with fixed-size tensor operations (the miner with one ``nonzero``, which its
data-dependent output needs). `sync_free` swaps them into a built loss; `REPLACEMENTS` maps
PML's names to them for ``method.loss.reducer`` and ``method.loss.miner``.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import miners, reducers
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import Tensor, nn


class SyncFreeDivisorReducer(reducers.DivisorReducer):
    """``sum(losses) / divisor``; 0 (with a zero gradient) where the divisor is 0. The sum is
    taken in float32 (PML retries in float32 after an fp16 NaN; the value is the same)."""

    def sum_and_divide(self, losses: Tensor, embeddings: Tensor, divisor) -> Tensor:
        total = losses.float().sum()
        if not torch.is_tensor(divisor):
            out = total / divisor if divisor != 0 else total * 0
        else:
            zero = divisor == 0
            out = torch.where(zero, total * 0, total / torch.where(zero, 1, divisor))
        return out.to(losses.dtype) + self.zero_loss(embeddings)


class SyncFreeThresholdReducer(reducers.ThresholdReducer):
    """Mean of the losses with ``low < loss < high``; 0 (zero gradient) when none is."""

    def element_reduction_helper(self, losses: Tensor, embeddings: Tensor) -> Tensor:
        kept = torch.ones_like(losses, dtype=torch.bool)
        low_condition = high_condition = None
        if self.low is not None:
            low_condition = losses > self.low
            kept &= low_condition
        if self.high is not None:
            high_condition = losses < self.high
            kept &= high_condition
        count = kept.sum()
        total = torch.where(kept, losses, 0).sum()
        loss = total / count.clamp(min=1).to(total.dtype) + self.zero_loss(embeddings)
        if self.collect_stats:  # kept on the device (PML reads them on the host)
            self.num_past_filter = count
            if low_condition is not None:
                self.num_above_low = low_condition.sum()
            if high_condition is not None:
                self.num_below_high = high_condition.sum()
        return loss


class SyncFreeAvgNonZeroReducer(SyncFreeThresholdReducer, reducers.AvgNonZeroReducer):
    """Mean of the positive losses (PML's ``AvgNonZeroReducer``)."""

    def __init__(self, **kwargs) -> None:
        SyncFreeThresholdReducer.__init__(self, low=0, **kwargs)


class SyncFreeTripletMarginMiner(miners.TripletMarginMiner):
    """PML's ``TripletMarginMiner`` with one ``nonzero`` over the (anchor, positive, negative)
    cube of the triplets it keeps (the same triplets, in the same order)."""

    def mine(self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor):
        matches, diffs = lmu.get_matches_and_diffs(labels, ref_labels)
        mat = self.distance(embeddings, ref_emb)
        ap, an = mat[:, :, None], mat[:, None, :]
        margin = ap - an if self.distance.is_inverted else an - ap
        if self.type_of_triplets == "easy":
            keep = margin > self.margin
        else:
            keep = margin <= self.margin
            if self.type_of_triplets == "hard":
                keep &= margin <= 0
            elif self.type_of_triplets == "semihard":
                keep &= margin > 0
        keep &= matches.bool()[:, :, None] & diffs.bool()[:, None, :]
        if self.collect_stats:  # over every valid triplet, on the device
            valid = (matches.bool()[:, :, None] & diffs.bool()[:, None, :]).float()
            n = valid.sum().clamp(min=1)
            with torch.no_grad():
                self.pos_pair_dist = (ap * valid).sum() / n
                self.neg_pair_dist = (an * valid).sum() / n
                self.avg_triplet_margin = (margin * valid).sum() / n
        return keep.nonzero(as_tuple=True)


REPLACEMENTS: dict[type, type] = {
    reducers.DivisorReducer: SyncFreeDivisorReducer,
    reducers.ThresholdReducer: SyncFreeThresholdReducer,
    reducers.AvgNonZeroReducer: SyncFreeAvgNonZeroReducer,
    miners.TripletMarginMiner: SyncFreeTripletMarginMiner,
}


def sync_free(module: nn.Module) -> nn.Module:
    """``module`` (a PML loss, miner or reducer) with itself and every module inside it (a
    loss's default reducer included) of a class in `REPLACEMENTS` switched to the sync-free
    subclass, settings kept (the subclasses add no state)."""
    for m in module.modules():
        m.__class__ = REPLACEMENTS.get(type(m), type(m))
    return module
