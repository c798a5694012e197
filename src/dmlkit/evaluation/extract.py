"""Embedding extraction: a model over a dataset in eval mode, batched, without gradients."""

from __future__ import annotations

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
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, labels) of every sample, in dataset order, on the CPU.

    ``train_mode=True`` reproduces Guided DML's official extraction (BatchNorm in training
    mode, using batch statistics); the default is eval mode.
    """
    was_training = model.training
    model.train(train_mode)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    embs, labels = [], []
    try:
        for images, y, _ in loader:
            embs.append(model(images.to(device)).float().cpu())
            labels.append(y)
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """`extract_embeddings` split over the ranks of a torch.distributed group: rank r embeds
    the r-th contiguous block of samples, and every rank gets all rows back in dataset order,
    each sample exactly once (no padding duplicates). One process: `extract_embeddings`.
    (``train_mode`` would normalize per-rank batches: the trainer refuses it with several ranks.)
    """
    world = process_group.info()
    if not world.active:
        return extract_embeddings(model, dataset, batch_size, device, num_workers, train_mode)
    n = len(dataset)
    lo, hi = n * world.rank // world.world_size, n * (world.rank + 1) // world.world_size
    part = Subset(dataset, range(lo, hi))
    if hi > lo:
        emb, labels = extract_embeddings(model, part, batch_size, device, num_workers,
                                         train_mode)
    else:  # more ranks than samples: this rank contributes nothing
        probe, label = extract_embeddings(model, Subset(dataset, [0]), 1, device)
        emb, labels = probe[:0], label[:0]
    index = torch.arange(lo, hi)
    return (process_group.gather_by_index(emb, index, n),
            process_group.gather_by_index(labels, index, n))
