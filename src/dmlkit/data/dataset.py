"""`ImageDataset`: a torch Dataset over a Catalog subset, yielding (image, label, index)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dmlkit.data.batch_transform import BatchTransform
from dmlkit.data.catalog import Catalog
from dmlkit.errors import DataError


class ImageDataset(Dataset):
    """Samples of a catalog with a transform.

    ``__getitem__(i)`` returns ``(image_tensor, label, i)``; the index lets methods look up
    per-sample state (Guided DML's targets). In-memory images are handed to the transform as a
    uint8 C x H x W tensor, files as PIL images (RGB, or L for single-channel datasets).

    With a ``batch_transform`` (the batched form of ``transform``), an in-memory dataset is
    ``batched``: `batch` returns whole transformed batches on a device, the deterministic part
    (resize) done once, on first use (a run on cached backbone features never pays it).
    """

    def __init__(self, catalog: Catalog, transform: Callable | None = None,
                 batch_transform: BatchTransform | None = None) -> None:
        self.catalog = catalog
        self.transform = transform
        self.labels = torch.as_tensor(catalog.labels, dtype=torch.long)
        self._images = (
            None if catalog.images is None
            else torch.from_numpy(np.ascontiguousarray(catalog.images)).permute(0, 3, 1, 2)
        )
        self.batch_transform = batch_transform if self._images is not None else None
        self._resized: torch.Tensor | None = None

    @property
    def batched(self) -> bool:
        """Whether `batch` is available (in-memory images with a batch transform)."""
        return self.batch_transform is not None

    @property
    def _prepared(self) -> torch.Tensor:
        """Every image through the batch transform's deterministic part (computed once)."""
        if self._resized is None:
            self._resized = self.batch_transform.prepare(self._images)
        return self._resized

    def batch(self, indices: torch.Tensor, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None, offset: int = 0,
              total: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, labels, indices) of samples ``indices`` on ``device``, the images through
        the batch transform there (``generator``, ``offset``, ``total``: see `BatchTransform`)."""
        device = torch.device(device)
        x = self._prepared[indices].contiguous()
        if device.type == "cuda":
            x = x.pin_memory()
        x = x.to(device, non_blocking=True)
        return (self.batch_transform(x, generator, offset, total),
                self.labels[indices].to(device, non_blocking=True), indices.to(device))

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
