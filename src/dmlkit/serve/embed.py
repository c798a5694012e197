"""Embedding images of any kind with a trained model, as the run saw its evaluation images.

Inputs: a path or PIL image; a list of paths, PIL images or uint8 ``C x H x W`` tensors; a uint8
batch (torch ``N x C x H x W`` or numpy ``N x H x W x C``; ``N x H x W`` for grey images); or an
`ImageDataset` (its raw images are used, not its own transform).

Every image is converted to the run's channel count (RGB -> L by the ITU-R 601 luma
``0.299 R + 0.587 G + 0.114 B`` in PIL's 16-bit fixed point, so tensors and PIL images give the
same grey levels; L -> RGB by repetition; alpha dropped), then passed through the run's eval
transform, batched and embedded without gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dmlkit.base.progress import bar
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.image_open import open_image
from dmlkit.data.workers import worker_error
from dmlkit.errors import DataError

ImageItem = str | Path | Image.Image | torch.Tensor
Images = str | Path | Image.Image | Sequence[ImageItem] | torch.Tensor | np.ndarray | ImageDataset


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 3 x H x W -> 1 x H x W: ``(19595 R + 38470 G + 7471 B + 2^15) >> 16`` (PIL's "L").

    >>> luma(torch.tensor([[[255]], [[0]], [[0]]], dtype=torch.uint8)).item()
    76
    """
    weights = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(3, 1, 1)
    return ((rgb.int() * weights).sum(0, keepdim=True) + (1 << 15)).bitwise_right_shift(16) \
        .to(torch.uint8)


def to_channels(image: Image.Image | torch.Tensor, channels: int) -> Image.Image | torch.Tensor:
    """``image`` (PIL, or uint8 tensor C x H x W) with ``channels`` (1 or 3) channels."""
    if isinstance(image, Image.Image):
        mode = "L" if channels == 1 else "RGB"
        return image if image.mode == mode else image.convert(mode)
    c = image.shape[0]
    if c in (2, 4):  # grey + alpha, RGB + alpha
        image, c = image[: c - 1], c - 1
    if c == channels:
        return image
    if c == 3 and channels == 1:
        return luma(image)
    if c == 1 and channels == 3:
        return image.expand(3, -1, -1)
    raise DataError(f"cannot convert a {c}-channel image to {channels} channels")


def _open(path: Path, channels: int) -> Image.Image:
    """The image of file ``path`` in ``channels``; DataError naming it if it cannot be decoded
    or is over the pixel limit (`open_image`)."""
    with open_image(path) as im:
        return im.convert("L" if channels == 1 else "RGB")


def _uint8_batch(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A uint8 batch as N x C x H x W (numpy arrays are N x H x W x C; 3-D means grey)."""
    is_numpy = isinstance(x, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(x)) if is_numpy else x
    if t.dtype != torch.uint8:
        raise DataError(
            f"image batches must be uint8 (0-255), got {t.dtype}; float pixels are ambiguous "
            "(0-1 or 0-255?): convert them first"
        )
    if t.ndim == 3:
        return t.unsqueeze(1)
    if t.ndim != 4:
        raise DataError(f"an image batch must be 3-D or 4-D, got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2) if is_numpy else t


class EmbeddingInputs(Dataset):
    """Images of any supported kind (module doc), converted to ``channels`` and transformed."""

    def __init__(self, images: Images, channels: int, transform: Callable) -> None:
        self.channels, self.transform = channels, transform
        if isinstance(images, str | Path | Image.Image):
            images = [images]
        if isinstance(images, ImageDataset):
            self._get: Callable[[int], Any] = images.raw
            self._n = len(images)
        elif isinstance(images, torch.Tensor | np.ndarray):
            batch = _uint8_batch(images)
            self._get, self._n = batch.__getitem__, len(batch)
        elif isinstance(images, Sequence):
            bad = next((x for x in images if not isinstance(x, ImageItem)), None)
            if bad is not None:
                raise DataError(
                    f"cannot embed a {type(bad).__name__}: give paths, PIL images or tensors"
                )
            if any(isinstance(x, torch.Tensor) and (x.dtype != torch.uint8 or x.ndim != 3)
                   for x in images):
                raise DataError("image tensors in a list must be uint8 C x H x W")
            self._get, self._n = images.__getitem__, len(images)
        else:
            raise DataError(
                f"cannot embed a {type(images).__name__}: give paths, PIL images, a uint8 "
                "batch or an ImageDataset"
            )

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self._get(i)
        if isinstance(item, str | Path):
            image = _open(Path(item), self.channels)
        else:
            image = to_channels(item, self.channels)
        return self.transform(image)


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise DataError(
            f"images differ in size after the run's eval transform ({sorted(shapes)[:3]}); "
            "resize them to the training size (or train with data.image_size set)"
        )
    return torch.stack(images)


@torch.no_grad()
def embed_images(
    model: nn.Module,
    images: Images,
    channels: int,
    transform: Callable,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """``model(transform(to_channels(image)))`` for every image, in order: float32 (N x d), CPU.

    ``device``: where to run (the model is moved there); default: where the model is. The
    model runs in eval mode (its mode is restored after).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    inputs = EmbeddingInputs(images, channels, transform)
    if len(inputs) == 0:
        raise DataError("no images to embed")
    if device is None:
        device = next(model.parameters()).device
    model.to(device)
    loader = DataLoader(inputs, batch_size=batch_size, num_workers=num_workers, collate_fn=_stack)
    was_training = model.training
    model.eval()
    out = []
    try:
        with bar("embedding", len(inputs), progress) as advance:
            for batch in loader:
                out.append(model(batch.to(device)).float().cpu())
                advance(len(batch))
    except DataError as e:
        raise worker_error(e) from None
    finally:
        model.train(was_training)
    return torch.cat(out)
