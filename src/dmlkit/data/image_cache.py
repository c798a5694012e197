"""`ImageCache`: every image of an on-disk dataset decoded once, pre-resized, memory-mapped.

``data.image_cache``: each image is decoded once and, when its shorter side exceeds ``size``,
resized (bilinear, as torchvision's ``Resize(size)``: aspect kept) so that it is ``size``;
the uint8 H x W x 3 pixels of all images lie back to back in ``<key>.u8`` and their offsets
and shapes in ``<key>.npz``, under ``<run.cache_dir>/images``. ``key`` is the sha256 of the
dataset name, the files (path, size, modification time, inode: `file_stats`), ``size``, the
JPEG draft flag and `FORMAT`: another image set or size gives another file; the same one,
from any later run, fold or trial, is read through a memory map and no image is decoded again.
Both files are written atomically, the index last (a file without its index is never read).

What changes numerically: the transform's first resize acts on the pre-resized image (one
bilinear resize of the original to ``size``, then the transform's), not on the original.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from dmlkit.base import process_group
from dmlkit.base.atomic_write import atomic_write_bytes, atomic_writer
from dmlkit.base.file_stats import file_stats
from dmlkit.base.progress import bar
from dmlkit.data.image_open import open_image
from dmlkit.data.workers import one_line_errors
from dmlkit.errors import DataError

FORMAT = 2  # bump when the file layout or the key's meaning changes (2: inodes in the key)


def decode(path: Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """The RGB image of file ``path``; a JPEG decoded at the smallest of 1/8, 1/4, 1/2 or full
    scale that keeps both sides >= ``draft`` (width, height) when it is given. DataError (one
    line) if it cannot be decoded or is over the pixel limit (`open_image`)."""
    with open_image(path) as im:
        if draft is not None and im.format == "JPEG":
            im.draft("RGB", draft)
        return im.convert("RGB")


def shrink(image: Image.Image, size: int | None) -> Image.Image:
    """``image`` with its shorter side resized to ``size`` if longer (bilinear, antialiased,
    as torchvision's ``Resize(size)``), else unchanged."""
    if size is None or min(image.size) <= size:
        return image
    return F.resize(image, [size], InterpolationMode.BILINEAR, antialias=True)


def cache_fits(images: int, size: int | None, folder: Path) -> bool:
    """``data.image_cache: auto``: whether a cache of ``images`` images pre-resized to a
    shorter side of ``size`` fits: at most ``images * size * 2 size * 3`` bytes (aspect ratios
    up to 2:1) within half the free space of ``folder``'s disk. False without a resize (the
    cache would hold the decoded originals).

    >>> cache_fits(10, None, Path("."))
    False
    >>> cache_fits(10, 256, Path("/nonexistent/below/any/disk"))
    True
    """
    if size is None:
        return False
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    return images * size * 2 * size * 3 <= shutil.disk_usage(existing).free // 2


def cache_key(name: str, paths: Sequence[Path], size: int | None, draft: bool) -> str:
    """sha256 naming the cache of ``paths`` (their `file_stats`: path, size, modification
    time and inode)."""
    blob = json.dumps({"format": FORMAT, "dataset": name, "files": file_stats(paths),
                       "size": size, "draft": draft}).encode()
    return hashlib.sha256(blob).hexdigest()


class _Shrunk(Dataset):
    """The pre-resized uint8 H x W x 3 pixels of each path (the cache's content)."""

    def __init__(self, paths: Sequence[Path], size: int | None, draft: bool) -> None:
        self.paths, self.size = paths, size
        self.draft = (size, size) if draft and size is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(shrink(decode(self.paths[i], self.draft), self.size), dtype=np.uint8)


class ImageCache:
    """The cached pixels of a list of image files; `image` gives one as a uint8 tensor."""

    def __init__(self, folder: Path, key: str, paths: Sequence[Path]) -> None:
        index = np.load(Path(folder) / f"{key}.npz")
        self.offsets, self.shapes = index["offsets"], index["shapes"]
        if len(self.offsets) != len(paths):
            raise DataError(f"image cache {key}: {len(self.offsets)} images, expected "
                            f"{len(paths)}; delete {folder}/{key}.* to rebuild it")
        self.file = Path(folder) / f"{key}.u8"
        self.pixels = np.memmap(self.file, dtype=np.uint8, mode="r")
        self.rows = {str(p): r for r, p in enumerate(paths)}

    def __getstate__(self) -> dict:
        """Pickled (a worker process started by spawn): the file is mapped again, not copied."""
        return {k: v for k, v in self.__dict__.items() if k != "pixels"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.pixels = np.memmap(self.file, dtype=np.uint8, mode="r")

    def row(self, path: Path) -> int:
        """Which cached image is file ``path``."""
        return self.rows[str(path)]

    def image(self, row: int) -> torch.Tensor:
        """Cached image ``row`` as a uint8 3 x H x W tensor (RGB; a copy, so the memory map is
        never written): the transforms run torch's uint8 kernels on it."""
        h, w, c = (int(v) for v in self.shapes[row])
        start = int(self.offsets[row])
        pixels = np.array(self.pixels[start:start + h * w * c]).reshape(h, w, c)
        return torch.from_numpy(pixels).permute(2, 0, 1)

    @classmethod
    def find(cls, folder: Path, name: str, paths: Sequence[Path], size: int | None,
             draft: bool = True) -> ImageCache | None:
        """The cache of ``paths`` in ``folder`` if it was built, else None."""
        key = cache_key(name, paths, size, draft)
        return cls(folder, key, paths) if (Path(folder) / f"{key}.npz").is_file() else None

    @classmethod
    def open(cls, folder: Path, name: str, paths: Sequence[Path], size: int | None,
             draft: bool = True, num_workers: int = 0) -> ImageCache:
        """The cache of ``paths`` in ``folder``: read if there, else built first (a progress
        bar on stderr; ``num_workers`` decoding processes). Under torch.distributed rank 0
        builds it, then every rank reads it."""
        folder = Path(folder)
        key = cache_key(name, paths, size, draft)
        main = process_group.info().is_main
        if not main:
            process_group.barrier()  # rank 0 writes the cache first
        if main and not (folder / f"{key}.npz").is_file():
            build(folder, key, _Shrunk(paths, size, draft), num_workers, name)
        if main and process_group.info().active:
            process_group.barrier()
        return cls(folder, key, paths)


def build(folder: Path, key: str, images: Dataset, num_workers: int, name: str) -> None:
    """Decode ``images`` into ``folder/key.u8`` and write its index ``folder/key.npz``."""
    n = len(images)
    offsets, shapes = np.zeros(n, np.int64), np.zeros((n, 3), np.int32)
    # its own generator: a run that builds the cache draws from the global RNG what one that
    # reads it draws
    loader = DataLoader(images, batch_size=16, num_workers=num_workers, collate_fn=_as_list,
                        generator=torch.Generator())
    row, offset = 0, 0
    with bar(f"caching {n} images of {name}", n) as advance, \
            atomic_writer(folder / f"{key}.u8") as f:
        for batch in one_line_errors(loader):
            for pixels in batch:
                offsets[row], shapes[row] = offset, pixels.shape
                f.write(pixels.tobytes())
                row, offset = row + 1, offset + pixels.size
            advance(len(batch))
    atomic_write_bytes(folder / f"{key}.npz", _npz(offsets=offsets, shapes=shapes))


def _as_list(batch: list) -> list:
    return batch


def _npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()
