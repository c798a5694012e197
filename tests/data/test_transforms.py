import numpy as np
import pytest
import torch
from PIL import Image

from dmlkit.data.transforms import build_transform
from dmlkit.errors import ConfigError


@pytest.mark.parametrize("name", ["small", "small_aug", "cifar", "raw255", "imagenet"])
def test_small_presets_on_tensors(name):
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    for train in (True, False):
        y = build_transform(name, train, 32, 3)(x)
        assert y.dtype == torch.float32 and y.shape == (3, 32, 32)


def test_raw255_keeps_pixel_scale():
    x = torch.full((1, 8, 8), 200, dtype=torch.uint8)
    assert build_transform("raw255", False)(x).max() == 200.0


def test_imagenet_normalizes_with_imagenet_statistics():
    x = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    y = build_transform("imagenet", False, 8, 3)(x)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    assert y.shape == (3, 8, 8)
    for c in range(3):
        assert torch.allclose(y[c], torch.full((8, 8), (1 - mean[c]) / std[c]))


def test_small_normalizes_to_minus_one_one():
    x = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    assert build_transform("small", False, None, 1)(x).tolist() == [[[-1.0, 1.0]]]


@pytest.mark.parametrize("name,size", [("mlrc", 227), ("mdr", 224), ("sharing", 224),
                                       ("mdr_bninception", 224)])
def test_paper_presets_on_pil(name, size):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), np.uint8))
    for train in (True, False):
        y = build_transform(name, train)(im)
        assert y.shape == (3, size, size)


def test_bninception_is_bgr_255_mean_subtracted():
    im = Image.fromarray(np.full((256, 256, 3), (255, 0, 0), np.uint8))
    y = build_transform("mdr_bninception", False)(im)
    assert torch.allclose(y[:, 100, 100], torch.tensor([-104.0, -117.0, 127.0]))


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown transform"):
        build_transform("nope", True)


def _left_to_right(transform, draws: int = 60) -> list[bool]:
    """Whether each of ``draws`` outputs of a horizontal ramp still increases left to right.

    Crops, resizes and the per-channel normalization keep a ramp increasing; a flip reverses it.
    """
    ramp = np.tile(np.linspace(0, 255, 96).astype(np.uint8)[None, :, None], (80, 1, 3))
    im = Image.fromarray(ramp)
    torch.manual_seed(0)
    outs = [transform(im) for _ in range(draws)]
    return [bool((y[:, :, -1] > y[:, :, 0]).all()) for y in outs]


def test_noflip_shared_stream_transform_never_flips():
    """Official datasets.py RandomizedDataset_wLabel: RandomResizedCrop(224), no flip."""
    noflip = build_transform("sharing_noflip", True)
    assert all(_left_to_right(noflip))
    flipping = _left_to_right(build_transform("sharing", True))  # the class stream flips
    assert 10 < flipping.count(False) < 50
    assert build_transform("sharing_noflip", False)(Image.new("RGB", (300, 260))).shape == \
        (3, 224, 224)  # eval: as sharing


@pytest.mark.parametrize("name", ["cifar_noflip", "sharing_bninception_noflip", "small_aug_noflip"])
def test_noflip_suffix_applies_to_any_preset(name):
    ops = build_transform(name, True, 32, 3).transforms
    assert not any(type(op).__name__ == "RandomHorizontalFlip" for op in ops)
    base = build_transform(name.removesuffix("_noflip"), True, 32, 3).transforms
    assert len(base) == len(ops) + 1


@pytest.mark.parametrize(("name", "mean", "std"), [
    ("mnist", 0.1307, 0.3081),  # official MyModel_MNIST.py
    ("fashion_mnist", 0.28604059698879553, 0.35302424451492237),  # official MyModel_Fashion.py
])
def test_guided_official_grey_normalizations(name, mean, std):
    x = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8)
    for train in (True, False):  # no augmentation in either
        out = build_transform(name, train, channels=1)(x)
        expected = (x.float() / 255 - mean) / std
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6 * expected.abs().max())


@pytest.mark.parametrize("name", ["mdr", "mdr_bninception", "mlrc", "sharing"])
def test_crop_ratio_reaches_the_random_resized_crop(name):
    """MDR's official utils/common.py: RandomResizedCrop(ratio=(0.75, 1.33))."""
    from torchvision.transforms import v2

    def ratio(tf):
        return next(op.ratio for op in tf.transforms if isinstance(op, v2.RandomResizedCrop))

    assert ratio(build_transform(name, True)) == (3 / 4, 4 / 3)
    assert ratio(build_transform(name, True, crop_ratio=(0.75, 1.33))) == (0.75, 1.33)
