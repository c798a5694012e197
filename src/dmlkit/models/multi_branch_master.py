"""`MultiBranchMaster`: Guided DML's master ("GEMINI"), one conv branch per training class.

Sample x of class c is embedded as f(x) = head(branch_c(x)), where

    branch_c = Conv(C->32, 5x5) -> PReLU -> MaxPool2 -> Conv(32->64, 5x5) -> PReLU -> MaxPool2
               -> flatten                                   (64 x h x w, e.g. 64x5x5 for 32x32)
    head     = Linear(flat->256) -> PReLU -> Linear(256->256) -> PReLU -> Linear(256->out_dim)

and the head is shared by all classes. Routing needs the label, so the master embeds labelled
training data only (its outputs become the student's targets, see `methods.guided_targets`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dmlkit.errors import ConfigError, DataError

KERNEL = 5
WIDTHS = (32, 64)
HIDDEN = 256


def branch_output_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Spatial size after two (valid 5x5 conv, 2x2 max-pool) stages: s -> ((s - 4) // 2 - 4) // 2.

    >>> branch_output_size(32), branch_output_size((28, 28))
    ((5, 5), (4, 4))
    """
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(hw) != 2:
        raise ConfigError(f"image_size must be an int or (height, width), got {image_size!r}")
    out = []
    for s in hw:
        for _ in WIDTHS:
            s = (s - KERNEL + 1) // 2
        out.append(s)
    if min(out) < 1:
        raise ConfigError(f"image_size {image_size!r} is too small for the master's conv stages")
    return out[0], out[1]


def _branch(in_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, WIDTHS[0], KERNEL),
        nn.PReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(WIDTHS[0], WIDTHS[1], KERNEL),
        nn.PReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )


class MultiBranchMaster(nn.Module):
    """One conv branch per class id in ``classes`` (branch k serves ``classes[k]``), shared head.

    Args:
        classes: the training class ids (any distinct integers).
        in_channels: image channels (1 for MNIST-like, 3 for CIFAR).
        image_size: ``H`` or ``(H, W)`` of the input images.
        out_dim: embedding dimension (the paper uses 2).

    >>> m = MultiBranchMaster(classes=[3, 7], in_channels=1, image_size=28)
    >>> emb, feats = m(torch.zeros(4, 1, 28, 28), torch.tensor([7, 3, 3, 7]))
    >>> tuple(emb.shape), tuple(feats.shape)
    ((4, 2), (4, 1024))
    """

    def __init__(
        self,
        classes: Sequence[int],
        in_channels: int,
        image_size: int | Sequence[int],
        out_dim: int = 2,
    ) -> None:
        super().__init__()
        ids = [int(c) for c in classes]
        if not ids:
            raise ConfigError("MultiBranchMaster needs at least one class")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"MultiBranchMaster classes must be distinct, got {ids}")
        if in_channels < 1 or out_dim < 1:
            raise ConfigError(
                f"in_channels and out_dim must be >= 1, got {in_channels} and {out_dim}"
            )
        h, w = branch_output_size(image_size)
        self.classes = ids
        self.flat_dim = WIDTHS[-1] * h * w
        self.out_dim = out_dim
        self.register_buffer("class_ids", torch.tensor(ids, dtype=torch.int64))  # in the weights
        # the routing table on the host (not moved with the module): CPU labels route without
        # waiting for the device
        self._sorted_ids, self._branch_of_sorted = torch.sort(torch.tensor(ids, dtype=torch.int64))
        self.branches = nn.ModuleList(_branch(in_channels) for _ in ids)
        self.head = nn.Sequential(
            nn.Linear(self.flat_dim, HIDDEN),
            nn.PReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.PReLU(),
            nn.Linear(HIDDEN, out_dim),
        )

    def branch_index(self, labels: Tensor) -> Tensor:
        """Branch index of each label (position of the label in ``classes``), on the labels'
        device."""
        labels = labels.to(torch.int64).reshape(-1)
        sorted_ids = self._sorted_ids.to(labels.device)
        pos = torch.searchsorted(sorted_ids, labels).clamp_(max=len(sorted_ids) - 1)
        known = sorted_ids[pos] == labels
        if not bool(known.all()):
            unknown = sorted(set(labels[~known].tolist()))
            raise DataError(f"labels {unknown} have no master branch (classes: {self.classes})")
        return self._branch_of_sorted.to(labels.device)[pos]

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Embed each image through its own class's branch.

        Returns ``(embeddings, branch_features)`` of shapes (N, out_dim) and (N, flat_dim).
        The batch is grouped by branch (one call per class present), then restored to input order.
        The grouping is computed where ``labels`` are: labels on the CPU (known to the host)
        route images on an accelerator without waiting for it.
        """
        if images.ndim != 4 or labels.numel() != images.shape[0]:
            raise DataError(
                f"expected images N x C x H x W and N labels, got {tuple(images.shape)} images "
                f"and {labels.numel()} labels"
            )
        branch = self.branch_index(labels)
        order = torch.argsort(branch, stable=True)
        present, counts = torch.unique_consecutive(branch[order], return_counts=True)
        restore = torch.argsort(order).to(images.device, non_blocking=True)
        groups = images[order.to(images.device, non_blocking=True)].split(counts.tolist())
        grouped = torch.cat(
            [self.branches[k](g) for k, g in zip(present.tolist(), groups, strict=True)]
        )
        features = grouped[restore]
        return self.head(features), features
