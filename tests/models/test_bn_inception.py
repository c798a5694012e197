import shutil

import pytest
import torch
import torch.nn.functional as F

from dmlkit.config import ModelConfig
from dmlkit.data.download import file_digest
from dmlkit.errors import CheckpointError, DataError
from dmlkit.models import bn_inception as bni
from dmlkit.models.backbones import build_backbone
from dmlkit.models.embedding_model import build_model
from numeric import assert_whole_close

# Convolutions of the published checkpoint bn_inception-52deb4733.pth: name, in, out, kernel, as
# defined in Cadene's pretrainedmodels/models/bninception.py (vendored by the official MDR code as
# model/backbone/bninception.py). "3a: 1x1 ..." stands for inception_3a_1x1.
LAYOUT = """
conv1_7x7_s2 3 64 7 | conv2_3x3_reduce 64 64 1 | conv2_3x3 64 192 3
3a: 1x1 192 64 1 | 3x3_reduce 192 64 1 | 3x3 64 64 3 | double_3x3_reduce 192 64 1
3a: double_3x3_1 64 96 3 | double_3x3_2 96 96 3 | pool_proj 192 32 1
3b: 1x1 256 64 1 | 3x3_reduce 256 64 1 | 3x3 64 96 3 | double_3x3_reduce 256 64 1
3b: double_3x3_1 64 96 3 | double_3x3_2 96 96 3 | pool_proj 256 64 1
3c: 3x3_reduce 320 128 1 | 3x3 128 160 3 | double_3x3_reduce 320 64 1
3c: double_3x3_1 64 96 3 | double_3x3_2 96 96 3
4a: 1x1 576 224 1 | 3x3_reduce 576 64 1 | 3x3 64 96 3 | double_3x3_reduce 576 96 1
4a: double_3x3_1 96 128 3 | double_3x3_2 128 128 3 | pool_proj 576 128 1
4b: 1x1 576 192 1 | 3x3_reduce 576 96 1 | 3x3 96 128 3 | double_3x3_reduce 576 96 1
4b: double_3x3_1 96 128 3 | double_3x3_2 128 128 3 | pool_proj 576 128 1
4c: 1x1 576 160 1 | 3x3_reduce 576 128 1 | 3x3 128 160 3 | double_3x3_reduce 576 128 1
4c: double_3x3_1 128 160 3 | double_3x3_2 160 160 3 | pool_proj 576 128 1
4d: 1x1 608 96 1 | 3x3_reduce 608 128 1 | 3x3 128 192 3 | double_3x3_reduce 608 160 1
4d: double_3x3_1 160 192 3 | double_3x3_2 192 192 3 | pool_proj 608 128 1
4e: 3x3_reduce 608 128 1 | 3x3 128 192 3 | double_3x3_reduce 608 192 1
4e: double_3x3_1 192 256 3 | double_3x3_2 256 256 3
5a: 1x1 1056 352 1 | 3x3_reduce 1056 192 1 | 3x3 192 320 3 | double_3x3_reduce 1056 160 1
5a: double_3x3_1 160 224 3 | double_3x3_2 224 224 3 | pool_proj 1056 128 1
5b: 1x1 1024 352 1 | 3x3_reduce 1024 192 1 | 3x3 192 320 3 | double_3x3_reduce 1024 192 1
5b: double_3x3_1 192 224 3 | double_3x3_2 224 224 3 | pool_proj 1024 128 1
"""


def published_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape: conv weight and bias, BN weight/bias/running stats, the 1000-way classifier."""
    shapes: dict[str, tuple[int, ...]] = {}
    for line in LAYOUT.strip().splitlines():
        prefix, _, convs = line.rpartition(": ")
        for conv in convs.split(" | "):
            name, cin, cout, k = conv.split()
            name = f"inception_{prefix}_{name}" if prefix else name
            o = int(cout)
            shapes[f"{name}.weight"] = (o, int(cin), int(k), int(k))
            shapes[f"{name}.bias"] = (o,)
            for p in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{name}_bn.{p}"] = (o,)
    shapes["last_linear.weight"] = (1000, 1024)
    shapes["last_linear.bias"] = (1000,)
    return shapes


def test_state_dict_has_the_published_checkpoint_layout():
    ours = {k: tuple(v.shape) for k, v in bni.BNInception().state_dict().items()
            if not k.endswith("num_batches_tracked")}
    expected = published_layout()
    assert len(expected) == 69 * 6 + 2
    assert ours == expected


@pytest.mark.parametrize("size", [224, 227])
def test_features_are_global_averages_of_a_7x7_map(size):
    net = build_backbone("bninception", 3).eval()
    x = torch.randn(2, 3, size, size) * 50
    with torch.no_grad():
        fmap, out = net.feature_map(x), net(x)
    assert net.feature_dim == 1024 and fmap.shape == (2, 1024, 7, 7) and out.shape == (2, 1024)
    expected = F.avg_pool2d(fmap, 7).flatten(1)
    assert_whole_close(out, expected)


def test_gray_input_adapts_the_stem():
    net = build_backbone("bninception", 1).eval()
    assert net.conv1_7x7_s2.weight.shape[1] == 1
    with torch.no_grad():
        assert net(torch.randn(2, 1, 224, 224)).shape == (2, 1024)


def _bn_stats(module):
    return [t.clone() for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)
            for t in (m.running_mean, m.running_var)]


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_batchnorm(freeze):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="bninception", freeze_bn=freeze, head={"dim": 8}), 3)
    x = torch.randn(2, 3, 64, 64) * 50 + 20
    model.eval()
    with torch.no_grad():
        eval_features = model.backbone(x)
    before = _bn_stats(model)
    model.train()
    train_features = model.backbone(x)
    unchanged = all(torch.equal(a, b) for a, b in zip(before, _bn_stats(model), strict=True))
    same = torch.allclose(train_features, eval_features, rtol=1e-4,
                          atol=1e-5 * eval_features.abs().max().item())
    assert unchanged == freeze and same == freeze
    bn = model.backbone.conv1_7x7_s2_bn
    assert bn.training != freeze and bn.weight.requires_grad  # affine parameters still train
    assert not model.backbone.last_linear.weight.requires_grad  # ImageNet classifier unused


@pytest.fixture(scope="module")
def fake_checkpoint(tmp_path_factory):
    """A file with the published layout (no num_batches_tracked) and random values."""
    torch.manual_seed(1)
    net = bni.BNInception()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("ckpt") / "fake.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    return tmp_path / "checkpoints" / bni.WEIGHTS_FILE


def _no_download(url, dest, **kw):
    raise AssertionError("a test must not download")


def test_pretrained_loads_the_cached_file_after_checking_its_digest(fake_checkpoint, hub,
                                                                     monkeypatch):
    path, state = fake_checkpoint
    hub.parent.mkdir(parents=True)
    shutil.copy(path, hub)
    monkeypatch.setattr(bni, "fetch", _no_download)
    with pytest.raises(CheckpointError, match=r"sha256 .* delete the file") as e:
        build_backbone("bninception", 3, pretrained=True)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(bni, "WEIGHTS_SHA256", file_digest(path, "sha256"))
    loaded = build_backbone("bninception", 3, pretrained=True).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_older_port_with_1xC_batchnorm_vectors_loads(fake_checkpoint, tmp_path, monkeypatch):
    _, state = fake_checkpoint
    old = {k: v.unsqueeze(0) if "_bn." in k else v for k, v in state.items()}
    path = tmp_path / "old.pth"
    torch.save(old, path)
    monkeypatch.setattr(bni, "WEIGHTS_SHA256", file_digest(path, "sha256"))
    net = bni.BNInception()
    bni.load_imagenet_weights(net, path)
    assert torch.equal(net.inception_5b_pool_proj_bn.running_var,
                       state["inception_5b_pool_proj_bn.running_var"])


def test_a_file_of_another_layout_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    monkeypatch.setattr(bni, "WEIGHTS_SHA256", file_digest(path, "sha256"))
    with pytest.raises(CheckpointError, match="not the BN-Inception layout"):
        bni.load_imagenet_weights(bni.BNInception(), path)


def test_download_tries_each_url_into_the_hub_cache(fake_checkpoint, hub, monkeypatch):
    path, _ = fake_checkpoint
    monkeypatch.setattr(bni, "WEIGHTS_SHA256", file_digest(path, "sha256"))
    calls, unreachable = [], False

    def fetch(url, dest, sha256):
        calls.append(url)
        assert dest == hub and sha256 == bni.WEIGHTS_SHA256
        if len(calls) == 1 or unreachable:
            raise DataError(f"download of {url} failed: unreachable")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
        return dest

    monkeypatch.setattr(bni, "fetch", fetch)
    assert bni.pretrained_weights() == hub and calls == list(bni.WEIGHTS_URLS)
    assert bni.pretrained_weights() == hub and len(calls) == 2  # cached: no second download

    hub.unlink()
    unreachable = True
    with pytest.raises(CheckpointError, match="by hand") as e:
        bni.pretrained_weights()
    assert "\n" not in str(e.value) and all(u in str(e.value) for u in bni.WEIGHTS_URLS)
