"""BN-Inception (Ioffe & Szegedy, ICML 2015) with the published ImageNet weights.

The layout is that of Cadene's ``pretrainedmodels`` port (a Caffe model converted to PyTorch),
whose file ``bn_inception-52deb4733.pth`` the official MDR code (``model/backbone/bninception.py``)
and "A Metric Learning Reality Check" (through ``pretrainedmodels.bninception``) load. Module
names equal the checkpoint's keys (``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ``inception_3a_1x1``,
..., ``last_linear``), so the file loads as it is.

Every unit is conv (with bias) -> BatchNorm -> ReLU. An inception block concatenates

    [1x1]  |  3x3_reduce (1x1) -> 3x3  |  double_3x3_reduce (1x1) -> double_3x3_1 -> double_3x3_2
           |  pool (3x3) [-> pool_proj (1x1)]

Stride-2 blocks (3c, 4e) have no 1x1 branch, stride 2 in ``3x3`` and ``double_3x3_2`` and a
3x3/2 max-pool without projection; the others pool 3x3/1 (average, padding counted; 5b: max).
Features: the 1024-channel map of block 5b, averaged over space (the official code's
``avg_pool2d`` with the map's width as kernel, i.e. global average pooling on square inputs).
The stride-2 blocks need an even input map (224 and 227 px work; e.g. 200 px does not), as in
the original. ``last_linear`` (the ImageNet classifier) is kept for the checkpoint layout only:
it is not used and does not train.

Input: BGR, 0-255, minus (104, 117, 128) (transform presets ``*_bninception``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dmlkit.data.download import fetch, file_digest
from dmlkit.errors import CheckpointError, DataError
from dmlkit.models.input_conv import adapt_input_conv

WEIGHTS_FILE = "bn_inception-52deb4733.pth"
WEIGHTS_URLS = (
    # the official MDR code's re-host (model/backbone/bninception.py, pretrained_settings)
    "https://github.com/anonymous-ai-research/pretrained/raw/master/pretrained/" + WEIGHTS_FILE,
    # Cadene's pretrainedmodels (pretrainedmodels/models/bninception.py), which MLRC loads
    "http://data.lip6.fr/cadene/pretrainedmodels/" + WEIGHTS_FILE,
)
# Full sha256 of the file as recorded by a public project that verifies it in the torch hub
# cache; its first 9 digits are the file name's "52deb4733" (torch.hub's naming convention).
WEIGHTS_SHA256 = "52deb473314542a5c2f87e9e6f26f4ca42fe863d15f986414dbae8c2dfdd2353"


class Block(NamedTuple):
    """Output channels of each branch; ``c1x1 = 0``: no 1x1 branch, ``proj = 0``: pool as is."""

    name: str
    c1x1: int
    c3_reduce: int
    c3: int
    double_reduce: int
    double: int
    pool: str  # "avg" or "max"
    proj: int
    stride: int = 1


# The block table of the paper (Ioffe & Szegedy 2015, Figure 5) with the checkpoint's channels.
BLOCKS = (
    Block("3a", 64, 64, 64, 64, 96, "avg", 32),
    Block("3b", 64, 64, 96, 64, 96, "avg", 64),
    Block("3c", 0, 128, 160, 64, 96, "max", 0, stride=2),
    Block("4a", 224, 64, 96, 96, 128, "avg", 128),
    Block("4b", 192, 96, 128, 96, 128, "avg", 128),
    Block("4c", 160, 128, 160, 128, 160, "avg", 128),
    Block("4d", 96, 128, 192, 160, 192, "avg", 128),
    Block("4e", 0, 128, 192, 192, 256, "max", 0, stride=2),
    Block("5a", 352, 192, 320, 160, 224, "avg", 128),
    Block("5b", 352, 192, 320, 192, 224, "max", 128),
)


class BNInception(nn.Module):
    """BN-Inception trunk: ``(B, 3, H, W)`` BGR-255 images -> ``(B, 1024)`` features."""

    feature_dim = 1024

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._unit("conv1_7x7_s2", 3, 64, 7, stride=2)
        self._unit("conv2_3x3_reduce", 64, 64, 1)
        self._unit("conv2_3x3", 64, 192, 3)
        c = 192
        for b in BLOCKS:
            p = f"inception_{b.name}_"
            if b.c1x1:
                self._unit(p + "1x1", c, b.c1x1, 1)
            self._unit(p + "3x3_reduce", c, b.c3_reduce, 1)
            self._unit(p + "3x3", b.c3_reduce, b.c3, 3, b.stride)
            self._unit(p + "double_3x3_reduce", c, b.double_reduce, 1)
            self._unit(p + "double_3x3_1", b.double_reduce, b.double, 3)
            self._unit(p + "double_3x3_2", b.double, b.double, 3, b.stride)
            if b.proj:
                self._unit(p + "pool_proj", c, b.proj, 1)
            c = b.c1x1 + b.c3 + b.double + (b.proj or c)
        self.last_linear = nn.Linear(c, num_classes).requires_grad_(False)

    def _unit(self, name: str, cin: int, cout: int, k: int, stride: int = 1) -> None:
        self.add_module(name, nn.Conv2d(cin, cout, k, stride, padding=k // 2))
        self.add_module(name + "_bn", nn.BatchNorm2d(cout))

    def _run(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.get_submodule(name + "_bn")(self.get_submodule(name)(x)))

    def _block(self, b: Block, x: torch.Tensor) -> torch.Tensor:
        p = f"inception_{b.name}_"
        out = [self._run(p + "1x1", x)] if b.c1x1 else []
        out.append(self._run(p + "3x3", self._run(p + "3x3_reduce", x)))
        d = self._run(p + "double_3x3_1", self._run(p + "double_3x3_reduce", x))
        out.append(self._run(p + "double_3x3_2", d))
        if b.pool == "avg":
            pooled = F.avg_pool2d(x, 3, 1, 1, ceil_mode=True, count_include_pad=True)
        else:
            pooled = F.max_pool2d(x, 3, b.stride, 1 if b.stride == 1 else 0, ceil_mode=True)
        out.append(self._run(p + "pool_proj", pooled) if b.proj else pooled)
        return torch.cat(out, 1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, 1024, H/32, W/32)`` output of block 5b."""
        x = F.max_pool2d(self._run("conv1_7x7_s2", x), 3, 2, ceil_mode=True)
        x = self._run("conv2_3x3", self._run("conv2_3x3_reduce", x))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        for b in BLOCKS:
            x = self._block(b, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean((2, 3))


def pretrained_weights() -> Path:
    """The published weights in torch.hub's cache (``<hub>/checkpoints``), downloaded if absent."""
    dest = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    if dest.is_file():
        return dest
    errors = []
    for url in WEIGHTS_URLS:
        try:
            return fetch(url, dest, sha256=WEIGHTS_SHA256)
        except DataError as e:
            errors.append(str(e).replace("\n", " "))
    raise CheckpointError(
        f"BN-Inception weights: {'; '.join(errors)}; put {WEIGHTS_FILE} into {dest.parent} by hand"
    )


def load_imagenet_weights(net: BNInception, path: Path) -> None:
    """Load the published checkpoint at ``path`` into ``net`` after checking its sha256."""
    digest = file_digest(Path(path), "sha256")
    if digest != WEIGHTS_SHA256:
        raise CheckpointError(
            f"{path}: sha256 {digest[:12]}... is not that of {WEIGHTS_FILE} "
            f"({WEIGHTS_SHA256[:12]}...); delete the file to download it again"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = net.state_dict()
    # Older ports stored the BatchNorm vectors as [1, C]; the official MDR loader squeezes them.
    state = {k: v.squeeze(0) if k in own and v.dim() == own[k].dim() + 1 else v
             for k, v in state.items()}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: {str(e).splitlines()[-1].strip()}") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: not the BN-Inception layout (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )


def bn_inception(in_channels: int = 3, pretrained: bool = False) -> BNInception:
    """BN-Inception; ``pretrained`` loads (downloading once) the published ImageNet weights.
    Other than 3 input channels: `adapt_input_conv` (a gray image = its BGR copy)."""
    net = BNInception()
    if pretrained:
        load_imagenet_weights(net, pretrained_weights())
    adapt_input_conv(net.conv1_7x7_s2, in_channels, pretrained)
    return net
