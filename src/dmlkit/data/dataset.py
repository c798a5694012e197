"""`ImageDataset`: a torch Dataset over a Catalog subset, yielding (image, label, index)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dmlkit.data.catalog import Catalog
from dmlkit.errors import DataError


class ImageDataset(Dataset):
    """Samples of a catalog with a transform.

    ``__getitem__(i)`` returns ``(image_tensor, label, i)``; the index lets methods look up
    per-sample state (Guided DML's targets). In-memory images are handed to the transform as a
    uint8 C x H x W tensor, files as PIL images (RGB, or L for single-channel datasets).
    """

    def __init__(self, catalog: Catalog, transform: Callable | None = None) -> None:
        self.catalog = catalog
        self.transform = transform
        self.labels = torch.as_tensor(catalog.labels, dtype=torch.long)
        self._images = (
            None if catalog.images is None
            else torch.from_numpy(np.ascontiguousarray(catalog.images)).permute(0, 3, 1, 2)
        )

    def __len__(self) -> int:
        return len(self.catalog)

    def raw(self, i: int):
        """The untransformed image (uint8 tensor C x H x W, or PIL image)."""
        if self._images is not None:
            return self._images[i]
        path = self.catalog.paths[i]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, ValueError) as e:
            raise DataError(f"cannot decode image {path}: {e}") from e

    def __getitem__(self, i: int):
        image = self.raw(i)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[i], i
