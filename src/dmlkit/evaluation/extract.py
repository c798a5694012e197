"""Embedding extraction: a model over a dataset in eval mode, batched, without gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from dmlkit.engine import distributed


@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    train_mode: bool = False,
    advance: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, labels) of every sample, in dataset order, on the CPU.

    ``train_mode=True`` reproduces Guided DML's official extraction (BatchNorm in training
    mode, using batch statistics); the default is eval mode. ``advance(n)`` is called after
    each batch of n samples (a progress bar).
    """
    was_training = model.training
    model.train(train_mode)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    embs, labels = [], []
    try:
        for images, y, _ in loader:
            embs.append(model(images.to(device)).float().cpu())
            labels.append(y)
            if advance is not None:
                advance(len(y))
    finally:
        model.train(was_training)
    return torch.cat(embs), torch.cat(labels)


def extract_sharded(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    train_mode: bool = False,
    advance: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`extract_embeddings` split over the ranks of a torch.distributed group: rank r embeds
    the r-th contiguous block of samples, and every rank gets all rows back in dataset order,
    each sample exactly once (no padding duplicates). One process: `extract_embeddings`.
    (``train_mode`` would normalize per-rank batches: the trainer refuses it with several ranks.)
    ``advance`` counts this rank's samples (`shard_size`).
    """
    world = distributed.info()
    if not world.active:
        return extract_embeddings(model, dataset, batch_size, device, num_workers, train_mode,
                                  advance)
    n = len(dataset)
    lo, hi = _shard(n)
    part = Subset(dataset, range(lo, hi))
    if hi > lo:
        emb, labels = extract_embeddings(model, part, batch_size, device, num_workers,
                                         train_mode, advance)
    else:  # more ranks than samples: this rank contributes nothing
        probe, label = extract_embeddings(model, Subset(dataset, [0]), 1, device)
        emb, labels = probe[:0], label[:0]
    index = torch.arange(lo, hi)
    return (distributed.gather_by_index(emb, index, n),
            distributed.gather_by_index(labels, index, n))


def _shard(n: int) -> tuple[int, int]:
    """[lo, hi): this rank's contiguous block of n samples."""
    world = distributed.info()
    return n * world.rank // world.world_size, n * (world.rank + 1) // world.world_size


def shard_size(n: int) -> int:
    """How many of n samples this rank embeds in `extract_sharded`."""
    lo, hi = _shard(n)
    return hi - lo
