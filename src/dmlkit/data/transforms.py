"""Named transform presets (train and eval), matching the papers' pipelines.

Every preset takes a PIL image or a uint8 C x H x W tensor and returns a float tensor.

| preset | train | eval |
|---|---|---|
| small | resize to image_size (if set) | same |
| small_aug | + random crop (pad 2) and horizontal flip | resize |
| cifar | random crop 32 (pad 4), flip; CIFAR mean/std | CIFAR mean/std |
| raw255 | float pixels 0-255, no normalization (Guided DML's official input) | same |
| imagenet | resize to image_size (if set), flip; ImageNet mean/std | resize; ImageNet mean/std |
| mnist, fashion_mnist | MNIST / Fashion-MNIST mean, std (Guided DML's official eval) | same |
| mlrc | resize 256, random resized crop 227 (scale 0.16-1), flip | resize 256, center 227 |
| mdr | resize 256x256, random resized crop 224 (scale 0.16-1), flip | resize 256x256, center 224 |
| sharing | random resized crop 224, flip | resize 256, center 224 |
| *_bninception | as above with BN-Inception input: BGR, 0-255, mean (104, 117, 128), std 1 | |
| *_noflip | as above without the random horizontal flip (Sharing Matters' shared stream) | same |

The random resized crops (mlrc, mdr, sharing) draw aspect ratios in ``crop_ratio`` (default
torchvision's (3/4, 4/3); MDR's official code: (0.75, 1.33)).

`build_batch_transform` gives the batched equivalent (`BatchTransform`, applied per batch on the
device) of the small-image presets (small, small_aug, cifar, raw255, imagenet, mnist,
fashion_mnist; + _noflip) for in-memory datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode, v2

from dmlkit.data.batch_transform import BatchTransform
from dmlkit.errors import ConfigError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
HALF = ((0.5,), (0.5,))
# Guided DML's official evaluation normalization (MyModel_MNIST.py, MyModel_Fashion.py)
GREY = {"mnist": ((0.1307,), (0.3081,)),
        "fashion_mnist": ((0.28604059698879553,), (0.35302424451492237,))}


class _BNInceptionInput:
    """RGB [0, 1] -> BGR [0, 255] minus (104, 117, 128): the BN-Inception convention."""

    mean = torch.tensor([104.0, 117.0, 128.0]).view(3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(0) * 255.0 - self.mean


def _stats(stats: tuple, channels_hint: int | None) -> tuple:
    """(mean, std), averaged over RGB for single-channel images."""
    mean, std = stats
    if channels_hint == 1 and len(mean) == 3:
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    return mean, std


def _normalize(stats: tuple, channels_hint: int | None) -> Callable:
    return v2.Normalize(*_stats(stats, channels_hint))


def build_transform(
    name: str, train: bool, image_size: int | None = None, channels: int | None = None,
    crop_ratio: tuple[float, float] | None = None,
) -> Callable:
    """The ``train`` or eval transform of preset ``name``."""
    noflip = name.endswith("_noflip")
    bgr = name.removesuffix("_noflip").endswith("_bninception")
    base = name.removesuffix("_noflip").removesuffix("_bninception")
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    resize = [v2.Resize((image_size, image_size), antialias=True)] if image_size else []
    big = [InterpolationMode.BILINEAR]
    if base == "small":
        ops = [*resize, *to_float, _normalize(HALF, channels)]
    elif base == "small_aug":
        size = image_size
        aug = [v2.RandomCrop(size, padding=2), v2.RandomHorizontalFlip()] if train and size else \
            [v2.RandomHorizontalFlip()] if train else []
        ops = [*resize, *aug, *to_float, _normalize(HALF, channels)]
    elif base == "cifar":
        aug = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()] if train else []
        ops = [*resize, *aug, *to_float, _normalize(CIFAR, channels)]
    elif base in GREY:
        ops = [*resize, *to_float, _normalize(GREY[base], channels)]
    elif base == "imagenet":
        aug = [v2.RandomHorizontalFlip()] if train else []
        ops = [*resize, *aug, *to_float, _normalize(IMAGENET, channels)]
    elif base == "raw255":
        ops = [*resize, v2.ToImage(), v2.ToDtype(torch.float32, scale=False)]
    elif base in ("mlrc", "mdr", "sharing"):
        crop = {"mlrc": 227, "mdr": 224, "sharing": 224}[base]
        pre = {"mlrc": [v2.Resize(256, *big)], "mdr": [v2.Resize((256, 256), *big)],
               "sharing": []}[base]
        if train:
            scale = (0.08, 1.0) if base == "sharing" else (0.16, 1.0)
            ratio = tuple(crop_ratio) if crop_ratio else (3 / 4, 4 / 3)
            ops = [*pre, v2.RandomResizedCrop(crop, scale=scale, ratio=ratio, antialias=True),
                   v2.RandomHorizontalFlip()]
        else:
            eval_pre = [v2.Resize(256, *big)] if base == "sharing" else pre
            ops = [*eval_pre, v2.CenterCrop(crop)]
        ops = [*ops, *to_float] + ([] if bgr else [_normalize(IMAGENET, channels)])
    else:
        raise ConfigError(
            f"unknown transform preset {name!r}; known: small, small_aug, cifar, raw255, imagenet, "
            "mnist, fashion_mnist, mlrc, mdr, sharing (+ _bninception, + _noflip)"
        )
    if bgr:
        if base not in ("mlrc", "mdr", "sharing"):
            raise ConfigError(f"{name}: BN-Inception input applies to the 224/227 px presets")
        ops.append(_BNInceptionInput())
    if noflip:
        ops = [op for op in ops if not isinstance(op, v2.RandomHorizontalFlip)]
    return v2.Compose(ops)


def split_to_float(transform: Callable | None) -> tuple[Callable, Callable] | None:
    """``(on_host, on_device)`` of a transform ending in ``ToImage, ToDtype(float32, scale)``
    and optionally ``Normalize``: ``on_host`` stops at the uint8 image (a quarter of the float32
    bytes to move between processes and to the device), ``on_device`` turns a uint8 batch into
    the normalized float32 one (the same values). None for any other transform."""
    ops = list(getattr(transform, "transforms", []))
    for i, op in enumerate(ops):
        if isinstance(op, v2.ToDtype) and op.scale and op.dtype == torch.float32:
            rest = ops[i + 1:]
            if i and isinstance(ops[i - 1], v2.ToImage) and all(
                    isinstance(r, v2.Normalize) for r in rest):
                return v2.Compose(ops[:i]), v2.Compose(ops[i:])
            return None
    return None


@dataclass(frozen=True)
class FirstResize:
    """The resize a transform starts with, ``size`` as torchvision's Resize takes it: ``(s,)``
    scales the shorter side to s (aspect kept), ``(h, w)`` gives exactly h x w."""

    size: tuple[int, ...]

    @property
    def draft(self) -> tuple[int, int]:
        """(width, height) an image may be shrunk to before the resize without it upscaling
        what it would have downscaled: every side >= the resize's target (PIL's
        ``Image.draft`` keeps both sides at least this large)."""
        return (self.size[0], self.size[0]) if len(self.size) == 1 else (self.size[1],
                                                                           self.size[0])

    @property
    def shorter_side(self) -> int:
        """The shorter side a pre-resized copy needs to feed this resize (its largest target)."""
        return max(self.size)


def first_resize(transform: Callable | None) -> FirstResize | None:
    """The `FirstResize` a transform (a `build_transform` result) starts with, or None (it
    starts with something else, e.g. a random crop of the full image).

    >>> first_resize(build_transform("mdr", True)), first_resize(build_transform("mlrc", False))
    (FirstResize(size=(256, 256)), FirstResize(size=(256,)))
    >>> first_resize(build_transform("sharing", True)) is None
    True
    """
    ops = getattr(transform, "transforms", [transform])
    if not ops or not isinstance(ops[0], v2.Resize) or ops[0].max_size is not None:
        return None
    return FirstResize(tuple(int(s) for s in ops[0].size))


def fixed_size(transform: Callable | None) -> bool:
    """Whether ``transform`` (a `build_transform` result) gives every image one size, whatever
    the size it gets: it resizes to (h, w), or crops to a size (center or random resized crop).

    >>> fixed_size(build_transform("small", False)), fixed_size(build_transform("small", False, 8))
    (False, True)
    >>> fixed_size(build_transform("sharing", True)), fixed_size(build_transform("mlrc", False))
    (True, True)
    """
    ops = getattr(transform, "transforms", [transform])
    return any((isinstance(op, v2.Resize) and len(op.size) == 2)
               or isinstance(op, v2.CenterCrop | v2.RandomResizedCrop) for op in ops)


def build_batch_transform(
    name: str, train: bool, image_size: int | None = None, channels: int | None = None
) -> BatchTransform | None:
    """The batched form of preset ``name`` (same operations and distributions as
    `build_transform`), or None for presets without one (the 224/227 px presets)."""
    base = name.removesuffix("_noflip")
    if base not in ("small", "small_aug", "cifar", "raw255", "imagenet", *GREY):
        return None
    if base == "raw255":
        return BatchTransform(size=image_size, scale=False)
    crop, pad = None, 0
    if train and base == "small_aug" and image_size:
        crop, pad = image_size, 2
    if train and base == "cifar":
        crop, pad = 32, 4
    stats = {"cifar": CIFAR, "imagenet": IMAGENET}.get(base) or GREY.get(base, HALF)
    mean, std = _stats(stats, channels)
    flip = train and base in ("small_aug", "cifar", "imagenet") and not name.endswith("_noflip")
    return BatchTransform(size=image_size, crop=crop, pad=pad, flip=flip,
                          mean=tuple(mean), std=tuple(std))
