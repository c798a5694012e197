"""Embedding extraction: a model over a dataset in eval mode, batched, without gradients."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from dmlkit.base import process_group


@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    train_mode: bool = False,
    advance: Callable[[int], None] | None = None,
    out_device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 embeddings, labels) of every sample, in dataset order, on ``out_device``.

    ``train_mode=True`` reproduces Guided DML's official extraction (BatchNorm in training
    mode, using batch statistics); the default is eval mode. A batched in-memory dataset (or a
    Subset of one) is transformed batch-wise on ``device`` (`ImageDataset.batch`), no DataLoader.
    The outputs stay on ``device`` until the end: one copy to ``out_device`` (none when it is
    ``device``). ``advance(n)`` is called after each batch of n samples (a progress bar).
    """
    was_training = model.training
    model.train(train_mode)
    embs, labels = [], []
    try:
        for images, y, _ in dataset_batches(dataset, batch_size, device, num_workers):
            embs.append(model(images.to(device, non_blocking=True)))
            labels.append(y)
            if advance is not None:
                advance(len(y))
    finally:
        model.train(was_training)
    return torch.cat(embs).float().to(out_device), torch.cat(labels).to(out_device)


def dataset_batches(dataset: Dataset, batch_size: int, device: torch.device | str,
                    num_workers: int = 0) -> Iterator[tuple]:
    """Consecutive batches of ``dataset``: on the device for a batched one (its deterministic
    batch transform), else a DataLoader's (on the CPU)."""
    base, index = dataset, None
    if isinstance(dataset, Subset):
        base, index = dataset.dataset, torch.as_tensor(dataset.indices, dtype=torch.long)
    if not getattr(base, "batched", False) or base.batch_transform.random:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=False,
                              num_workers=num_workers)
        return
    index = torch.arange(len(base)) if index is None else index
    for chunk in index.split(batch_size):
        yield base.batch(chunk, device)


def extract_sharded(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    train_mode: bool = False,
    advance: Callable[[int], None] | None = None,
    out_device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """`extract_embeddings` split over the ranks of a torch.distributed group: rank r embeds
    the r-th contiguous block of samples, and every rank gets all rows back in dataset order,
    each sample exactly once (no padding duplicates), on ``out_device``. One process:
    `extract_embeddings`.
    (``train_mode`` would normalize per-rank batches: the trainer refuses it with several ranks.)
    ``advance`` counts this rank's samples (`shard_size`).
    """
    world = process_group.info()
    if not world.active:
        return extract_embeddings(model, dataset, batch_size, device, num_workers, train_mode,
                                  advance, out_device)
    n = len(dataset)
    lo, hi = _shard(n)
    part = Subset(dataset, range(lo, hi))
    if hi > lo:
        emb, labels = extract_embeddings(model, part, batch_size, device, num_workers,
                                         train_mode, advance, out_device)
    else:  # more ranks than samples: this rank contributes nothing
        probe, label = extract_embeddings(model, Subset(dataset, [0]), 1, device,
                                          out_device=out_device)
        emb, labels = probe[:0], label[:0]
    index = torch.arange(lo, hi)
    return (process_group.gather_by_index(emb, index, n),
            process_group.gather_by_index(labels, index, n))


def _shard(n: int) -> tuple[int, int]:
    """[lo, hi): this rank's contiguous block of n samples."""
    world = process_group.info()
    return n * world.rank // world.world_size, n * (world.rank + 1) // world.world_size


def shard_size(n: int) -> int:
    """How many of n samples this rank embeds in `extract_sharded`."""
    lo, hi = _shard(n)
    return hi - lo
