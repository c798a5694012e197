"""`BatchTransform`: a small-image transform preset applied to whole batches on the device.

In-memory datasets (MNIST family, CIFAR, digits) hold uint8 images. The per-sample path runs a
torchvision v2 pipeline per image in the DataLoader (about a third of a millisecond each). Here
the deterministic resize runs once over the whole set (`prepare`, kept as uint8), and each batch
is cropped, flipped, converted and normalized in a few tensor operations on the training device
(`__call__`). The result equals the per-sample preset's up to its random draws:

    crop:  pad every image by ``pad`` zeros, take the ``crop`` x ``crop`` window at offset
           (i, j) ~ U{0..H+2p-crop} x U{0..W+2p-crop}, drawn per sample (torchvision RandomCrop)
    flip:  mirror horizontally with probability 1/2, drawn per sample (RandomHorizontalFlip)
    float: x / 255 (``scale``) or x, then (x - mean) / std per channel (v2.Normalize)

The draws come from the ``generator`` given to the call (not the global RNG): the batch loader
seeds it with (seed, stream, epoch, batch), so the draws are a pure function of the position
and a resumed run repeats them. They cover ``total`` samples of which the call transforms
``[offset, offset + n)``: a rank's slice of a global batch gets the draws one process would make.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as F

from dmlkit.errors import ConfigError

CHUNK = 4096  # images resized per call in `prepare`


@dataclass(frozen=True)
class BatchTransform:
    """Resize (once) -> random pad-crop / flip (per batch, per sample) -> float -> normalize."""

    size: int | None = None
    crop: int | None = None
    pad: int = 0
    flip: bool = False
    scale: bool = True
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def random(self) -> bool:
        """Whether a call draws random numbers (needs a generator)."""
        return self.flip or self.crop is not None

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic resize of uint8 N x C x H x W images (antialiased, as v2.Resize)."""
        if self.size is None:
            return images
        return torch.cat([F.resize(images[i:i + CHUNK].contiguous(), [self.size, self.size],
                                   antialias=True) for i in range(0, len(images), CHUNK)])

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 offset: int = 0, total: int | None = None) -> torch.Tensor:
        """Float N x C x h x w batch of prepared uint8 images ``x`` (on their device)."""
        n = len(x)
        total = n if total is None else total
        if self.random and generator is None:
            raise ValueError("a random batch transform needs a generator")
        if self.crop is not None:
            x = self._crop(x, generator, offset, total)
        if self.flip:
            heads = torch.rand(total, generator=generator, device=x.device)[offset:offset + n]
            x = torch.where((heads < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
        x = F.to_dtype(x, torch.float32, scale=self.scale)
        if self.mean is not None:
            x = F.normalize(x, list(self.mean), list(self.std))
        return x

    def _crop(self, x: torch.Tensor, generator: torch.Generator, offset: int,
              total: int) -> torch.Tensor:
        """Per-sample random ``crop`` windows of the zero-padded batch, gathered at once."""
        n, _, h, w = x.shape
        c, p = self.crop, self.pad
        if h + 2 * p < c or w + 2 * p < c:
            raise ConfigError(f"random crop {c} is larger than the {h}x{w} image padded by {p}")
        dev = x.device
        oy = torch.randint(0, h + 2 * p - c + 1, (total,), generator=generator, device=dev)
        ox = torch.randint(0, w + 2 * p - c + 1, (total,), generator=generator, device=dev)
        oy, ox = oy[offset:offset + n], ox[offset:offset + n]
        padded = torch.nn.functional.pad(x, (p, p, p, p)) if p else x
        steps = torch.arange(c, device=dev)
        rows = (oy[:, None] + steps)[:, :, None]  # n x c x 1
        cols = (ox[:, None] + steps)[:, None, :]  # n x 1 x c
        sample = torch.arange(n, device=dev)[:, None, None]
        return padded[sample, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # n x C x c x c
