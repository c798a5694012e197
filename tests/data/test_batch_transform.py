"""`BatchTransform` against the per-sample torchvision presets it replaces."""

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from dmlkit.data.batch_transform import BatchTransform
from dmlkit.data.transforms import build_batch_transform, build_transform
from dmlkit.errors import ConfigError


def images(n=16, channels=3, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", ["small", "small_aug", "cifar", "raw255", "imagenet"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [None, 10])
def test_eval_equals_the_per_sample_preset(name, channels, size):
    x = images(channels=channels)
    per_sample = build_transform(name, False, size, channels)
    batched = build_batch_transform(name, False, size, channels)
    expected = torch.stack([per_sample(xi) for xi in x])
    assert not batched.random
    assert torch.equal(batched(batched.prepare(x)), expected)


def test_paper_presets_have_no_batched_form():
    assert build_batch_transform("mdr", True, 224, 3) is None


def candidates(image, size, pad, normalize):
    """Every outcome of pad-crop and flip of one uint8 image (brute force), normalized."""
    padded = F.pad(image, [pad] * 4)
    h = padded.shape[-1] - size + 1
    outs = []
    for i in range(h):
        for j in range(h):
            crop = padded[:, i:i + size, j:j + size]
            outs += [normalize(crop), normalize(crop.flip(-1))]
    return torch.stack(outs)


@pytest.mark.parametrize("name,size,pad", [("small_aug", 10, 2), ("cifar", 32, 4)])
def test_train_outputs_are_outcomes_of_the_per_sample_preset(name, size, pad):
    x = images(n=24, channels=3, size=size)
    bt = build_batch_transform(name, True, size, 3)
    out = bt(bt.prepare(x), torch.Generator().manual_seed(1))
    stats = build_batch_transform(name, False, size, 3)
    for xi, oi in zip(x, out, strict=True):
        cands = candidates(xi, size, pad, lambda c: stats(c[None])[0])
        assert (cands == oi).flatten(1).all(1).any()


def test_imagenet_train_flips_only():
    x = images(n=8, size=6)
    out = build_batch_transform("imagenet", True, None, 3)(x, torch.Generator().manual_seed(3))
    plain = build_transform("imagenet", False, None, 3)
    for xi, oi in zip(x, out, strict=True):
        assert torch.equal(oi, plain(xi)) or torch.equal(oi, plain(xi.flip(-1)))


def test_flips_are_drawn_per_sample_with_probability_half():
    x = images(n=4000, size=6)
    out = BatchTransform(flip=True, scale=False)(x, torch.Generator().manual_seed(2))
    flipped = (out == x.flip(-1).float()).flatten(1).all(1)
    assert torch.equal(flipped | (out == x.float()).flatten(1).all(1), torch.ones(4000, dtype=bool))
    assert 0.45 < flipped.float().mean() < 0.55


def test_crop_offsets_are_drawn_per_sample_uniformly():
    x = (torch.arange(64) + 1).view(1, 1, 8, 8).to(torch.uint8).expand(5000, 1, 8, 8)
    out = BatchTransform(crop=8, pad=2, scale=False)(x, torch.Generator().manual_seed(5))
    centre = out[:, 0, 4, 4].long() - 1  # = x[2 + dy, 2 + dx] - 1 = (2 + dy) * 8 + (2 + dx)
    dy, dx = centre // 8 - 2, centre % 8 - 2
    counts = torch.bincount(dy * 5 + dx, minlength=25)
    assert len(counts) == 25 and counts.min() > 140 and counts.max() < 260  # 200 expected


def test_a_slice_gets_the_draws_of_the_whole_batch():
    x = images(n=12)
    bt = BatchTransform(crop=12, pad=4, flip=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    whole = bt(x, torch.Generator().manual_seed(3))
    parts = [bt(x[k:k + 4], torch.Generator().manual_seed(3), offset=k, total=12)
             for k in (0, 4, 8)]
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(bt(x, torch.Generator().manual_seed(3)), whole)
    assert not torch.equal(bt(x, torch.Generator().manual_seed(4)), whole)


def test_a_crop_larger_than_the_padded_image_is_refused():
    bt = build_batch_transform("cifar", True, None, 3)
    with pytest.raises(ConfigError, match="larger than"):
        bt(images(size=20), torch.Generator())
