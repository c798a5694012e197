"""`ImageDataset`: a torch Dataset over a Catalog subset, yielding (image, label, index)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from dmlkit.data.batch_transform import BatchTransform
from dmlkit.data.catalog import Catalog
from dmlkit.data.image_cache import ImageCache, decode
from dmlkit.data.transforms import first_resize


class ImageDataset(Dataset):
    """Samples of a catalog with a transform.

    ``__getitem__(i)`` returns ``(image_tensor, label, i)``; the index lets methods look up
    per-sample state (Guided DML's targets). ``__getitem__((i, seed))`` draws the transform's
    random numbers from torch's generator seeded with ``seed`` (the global RNG is left as it
    was): the per-sample path's augmentation as a function of the position (`SeededBatches`).
    In-memory images and images read from an `ImageCache` (when one is given) are handed to the
    transform as uint8 C x H x W tensors; files otherwise as RGB PIL images, decoded from the
    file (with ``jpeg_draft``, a JPEG at the smallest 1/2^k scale the transform's first resize
    allows).

    With a ``batch_transform`` (the batched form of ``transform``), an in-memory dataset is
    ``batched``: `batch` returns whole transformed batches on a device, the deterministic part
    (resize) done once, on first use (a run on cached backbone features never pays it).
    """

    def __init__(self, catalog: Catalog, transform: Callable | None = None,
                 batch_transform: BatchTransform | None = None, jpeg_draft: bool = False,
                 cache: ImageCache | None = None) -> None:
        self.catalog = catalog
        self.transform = transform
        resize = first_resize(transform) if jpeg_draft else None
        self.draft = None if resize is None else resize.draft
        self.cache = cache if catalog.paths is not None else None
        self._rows = (None if self.cache is None
                      else np.array([self.cache.row(p) for p in catalog.paths], dtype=np.int64))
        self.labels = torch.as_tensor(catalog.labels, dtype=torch.long)
        self._images = (
            None if catalog.images is None
            else torch.from_numpy(np.ascontiguousarray(catalog.images)).permute(0, 3, 1, 2)
        )
        self.batch_transform = batch_transform if self._images is not None else None
        self._resized: torch.Tensor | None = None

    @property
    def on_disk(self) -> bool:
        """Whether the images are files (decoded, or read from the cache, per sample)."""
        return self._images is None

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
        the batch transform there (``generator``, ``offset``, ``total``: see `BatchTransform`).
        On CUDA the three are copied from pinned memory without waiting for the device."""
        device = torch.device(device)
        host = (self._prepared[indices].contiguous(), self.labels[indices], indices)
        if device.type == "cuda":
            host = tuple(t.pin_memory() for t in host)
        x, labels, indices = (t.to(device, non_blocking=True) for t in host)
        return self.batch_transform(x, generator, offset, total), labels, indices

    def __len__(self) -> int:
        return len(self.catalog)

    def raw(self, i: int):
        """The untransformed image (uint8 tensor C x H x W, or a PIL image decoded from its
        file)."""
        if self._images is not None:
            return self._images[i]
        if self._rows is not None:
            return self.cache.image(int(self._rows[i]))
        return decode(self.catalog.paths[i], self.draft)

    def __getitem__(self, item: int | tuple[int, int]):
        i, seed = item if isinstance(item, tuple) else (item, None)
        image = self.raw(i)
        if self.transform is not None and seed is None:
            image = self.transform(image)
        elif self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(seed)
                image = self.transform(image)
        return image, self.labels[i], i
