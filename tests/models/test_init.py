import math

import pytest
import torch
import torchvision
from torch import nn

from dmlkit.config import ModelConfig
from dmlkit.errors import ConfigError
from dmlkit.models.embedding_model import build_model
from dmlkit.models.init import apply_init


def _pytorch_default_std(fan_in: int) -> float:
    """std of kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in),
    U(-bound, bound) has std bound / sqrt(3) = 1 / sqrt(3 fan_in)."""
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
    bound = gain * math.sqrt(3.0 / fan_in)
    return bound / math.sqrt(3)


def _kaiming_fan_out_std(fan_out: int) -> float:
    """torchvision ResNet: kaiming_normal_(mode="fan_out", nonlinearity="relu")."""
    return math.sqrt(2.0 / fan_out)


def _student(init: str):
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="resnet18_cifar", init=init), 3).backbone


@pytest.mark.parametrize("layer", ["layer1.0.conv1", "layer2.0.conv1", "layer3.1.conv2"])
def test_conv_weight_std_under_each_init(layer):
    convs = {init: dict(_student(init).named_modules())[layer]
             for init in ("torchvision", "pytorch_default")}
    w = convs["pytorch_default"].weight.detach()
    c_out, c_in, kh, kw = w.shape
    fan_in, fan_out = c_in * kh * kw, c_out * kh * kw
    # the official CIFAR ResNet-18 (nn.Conv2d left at its default init): std 0.024 in layer1
    assert float(w.std()) == pytest.approx(_pytorch_default_std(fan_in), rel=0.05)
    assert float(w.abs().max()) <= 1 / math.sqrt(fan_in)
    official = nn.Conv2d(c_in, c_out, (kh, kw), bias=False).weight.detach()
    assert float(w.std()) == pytest.approx(float(official.std()), rel=0.05)
    tv = convs["torchvision"].weight.detach()
    assert float(tv.std()) == pytest.approx(_kaiming_fan_out_std(fan_out), rel=0.05)
    if layer == "layer1.0.conv1":
        assert round(float(w.std()), 3) == 0.024 and round(float(tv.std()), 3) == 0.059


def test_pytorch_default_resets_every_layer():
    net = _student("pytorch_default")
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    # torchvision (the default) leaves the constructor's init and draws nothing more: a seeded
    # build gives the weights it gave before the option existed
    torch.manual_seed(0)
    expected = nn.Sequential(*build_model(ModelConfig(backbone="resnet18_cifar"), 3).children())
    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    ref.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    got = dict(expected.named_parameters())
    assert all(torch.equal(got[f"0.{k}"], v) for k, v in ref.named_parameters()
               if not k.startswith("fc."))


def test_pretrained_weights_are_not_overwritten():
    with pytest.raises(ConfigError, match="pretrained"):
        apply_init(nn.Conv2d(3, 4, 3), "pytorch_default", pretrained=True)
    with pytest.raises(ConfigError, match=r"unknown model\.init"):
        apply_init(nn.Conv2d(3, 4, 3), "xavier")
