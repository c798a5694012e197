"""`FeatureDataset`: cached backbone features standing in for a catalog's images."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from dmlkit.data.catalog import Catalog
from dmlkit.errors import DataError


class FeatureDataset(Dataset):
    """Samples of ``catalog`` as their features: ``__getitem__(i)`` is
    ``(features[i], label, i)``, like `ImageDataset` with the backbone already applied (no
    transform: augmentation is off on this path)."""

    batched = False
    transform = None

    def __init__(self, catalog: Catalog, features: torch.Tensor) -> None:
        if len(features) != len(catalog):
            raise DataError(f"{catalog.name}: {len(features)} cached feature rows for "
                            f"{len(catalog)} images")
        self.catalog, self.features = catalog, features
        self.labels = torch.as_tensor(catalog.labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.catalog)

    def __getitem__(self, i: int):
        return self.features[i], self.labels[i], i
