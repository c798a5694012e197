"""A gray image into an adapted pretrained stem = its 3-channel copy into the original model."""

import copy

import pytest
import torch

from dmlkit.models.backbones import build_backbone
from dmlkit.models.input_conv import adapt_input_conv

STEMS = {  # backbone -> its first convolution (the attribute path)
    "resnet18": "conv1",
    "bninception": "conv1_7x7_s2",
    "efficientnet_lite0": "net._conv_stem",
}


def _stem(net: torch.nn.Module, path: str) -> torch.nn.Conv2d:
    for part in path.split("."):
        net = getattr(net, part)
    return net


@pytest.mark.parametrize("name", list(STEMS))
def test_adapted_stem_sees_a_gray_image_as_its_rgb_copy(name: str) -> None:
    if name == "efficientnet_lite0":
        pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    rgb = build_backbone(name, 3).eval()  # stands in for pretrained weights (offline)
    gray = copy.deepcopy(rgb)
    adapt_input_conv(_stem(gray, STEMS[name]), 1, pretrained=True)
    x = torch.randn(2, 1, 224, 224)
    with torch.no_grad():
        expected = rgb(x.repeat(1, 3, 1, 1))
        got = gray(x)
    assert _stem(gray, STEMS[name]).in_channels == 1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("name", list(STEMS))
def test_every_backbone_builds_for_gray_images(name: str) -> None:
    if name == "efficientnet_lite0":
        pytest.importorskip("efficientnet_lite_pytorch")
    net = build_backbone(name, 1).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 224, 224)).shape == (1, net.feature_dim)
