"""Embedding extraction: a model over a dataset in eval mode, batched, without gradients."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


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
