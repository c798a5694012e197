"""JPEG draft decoding and the pre-resized, memory-mapped image cache."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from data.fixtures import make_folder
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.image_cache import ImageCache, decode, shrink
from dmlkit.data.registry import load_catalog
from dmlkit.data.transforms import build_transform, first_resize


def smooth(path, width=1200, height=900):
    """A photo-like (smooth) image: what draft decoding is meant for."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([128 + 100 * np.sin(x / 37.0), 128 + 100 * np.cos(y / 23.0),
                       (x + y) % 256 * 0.5 + 60], -1).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=92)
    return path


@pytest.mark.parametrize("preset", ["mdr", "mlrc"])
def test_draft_decodes_a_large_jpeg_smaller_with_a_close_result(tmp_path, preset):
    transform = build_transform(preset, False)
    draft = first_resize(transform).draft
    assert draft == (256, 256)
    path = smooth(tmp_path / "a.jpg")
    full, small = decode(path), decode(path, draft)
    assert full.size == (1200, 900) and small.size == (600, 450)  # 1/2: both sides >= 256
    expected, got = transform(full), transform(small)
    scale = expected.abs().max()
    assert got.shape == expected.shape
    assert (got - expected).abs().mean() <= 0.01 * scale  # measured: 0.3 %
    assert (got - expected).abs().max() <= 0.12 * scale  # measured: 9 % (edges)


def test_draft_leaves_other_formats_and_transforms_alone(tmp_path):
    Image.open(smooth(tmp_path / "a.jpg")).save(tmp_path / "a.png")
    assert decode(tmp_path / "a.png", (256, 256)).size == (1200, 900)
    assert first_resize(build_transform("sharing", True)) is None  # a crop of the full image
    catalog = load_catalog("folder", make_folder(tmp_path / "img", size=(1100, 600)))
    drafted = ImageDataset(catalog, build_transform("small", False, 64), jpeg_draft=True)
    assert drafted.raw(0).size == (138, 75)  # 1/8 keeps both sides >= 64
    plain = ImageDataset(catalog, build_transform("small", False, 64))
    assert plain.raw(0).size == (1100, 600)


def test_cache_holds_every_image_pre_resized(tmp_path):
    root = make_folder(tmp_path / "img", classes=("a", "b"), per_class=2, size=(50, 30))
    (root / "b" / "0001.jpg").unlink()
    smooth(root / "b" / "0001.png", 20, 12)  # smaller than the cache size: kept as it is
    paths = load_catalog("folder", root).paths
    cache = ImageCache.open(tmp_path / "cache", "folder", paths, 24, draft=False)
    for p in paths:
        expected = np.asarray(shrink(decode(p), 24))
        image = cache.image(cache.row(p))
        assert image.dtype == torch.uint8 and image.shape[0] == 3  # C x H x W for torch kernels
        assert np.array_equal(image.permute(1, 2, 0).numpy(), expected)
    shapes = sorted(tuple(s) for s in cache.shapes.tolist())
    assert shapes == [(12, 20, 3), (24, 40, 3), (24, 40, 3), (24, 40, 3)]
    files = sorted(f.suffix for f in (tmp_path / "cache").iterdir())
    assert files == [".npz", ".u8"]  # no temporary file left


def test_cache_is_found_without_decoding_until_a_file_changes(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "img", classes=("a", "b"), per_class=2, size=(50, 30))
    paths = load_catalog("folder", root).paths
    assert ImageCache.find(tmp_path, "folder", paths, 24) is None
    built = ImageCache.open(tmp_path, "folder", paths, 24)
    first = built.image(0)

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(Image, "open", no_decoding)
    found = ImageCache.find(tmp_path, "folder", paths, 24)
    assert torch.equal(found.image(0), first)
    assert ImageCache.find(tmp_path, "folder", paths, 32) is None  # another size: another key
    monkeypatch.undo()
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(paths[0])  # the file changed
    assert ImageCache.find(tmp_path, "folder", paths, 24) is None


def test_cached_dataset_reads_the_cache(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "img", classes=("a", "b"), per_class=2, size=(50, 30))
    catalog = load_catalog("folder", root)
    cache = ImageCache.open(tmp_path / "cache", "folder", catalog.paths, 24)
    transform = build_transform("small", False, 16)
    dataset = ImageDataset(catalog, transform, cache=cache)
    monkeypatch.setattr(Image, "open", lambda *a, **k: 1 / 0)
    image, label, index = dataset[2]
    assert torch.equal(image, transform(cache.image(cache.row(catalog.paths[2]))))
    assert (int(label), index) == (int(catalog.labels[2]), 2)
    copy = pickle.loads(pickle.dumps(dataset))  # as a spawned worker gets it: mapped again
    assert isinstance(copy.cache.pixels, np.memmap) and torch.equal(copy[2][0], image)


@pytest.mark.parametrize(("setting", "free", "cached"), [
    ("auto", 10**12, True), ("auto", 1000, False), (True, 1000, True), (False, 10**12, False)])
def test_auto_caches_a_dataset_that_fits_in_half_the_free_disk(tmp_path, monkeypatch, setting,
                                                                free, cached):
    """``data.image_cache: auto`` (the default) caches when 8 images x 24 x 48 x 3 bytes (the
    transforms' resize target 24, aspect up to 2:1) fit in half the free space; true/false
    force it either way."""
    from dmlkit.config import DataConfig
    from dmlkit.data import build, image_cache

    root = make_folder(tmp_path / "img", classes=("a", "b", "c", "d"), per_class=2,
                       size=(50, 30))
    usage = image_cache.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(image_cache.shutil, "disk_usage", lambda p: usage._replace(free=free))
    cfg = DataConfig(name="folder", root=str(root), transform="small", image_size=16,
                     image_cache_size=24, image_cache=setting, protocol="zero_shot",
                     train_classes=[0, 1], device_transforms=False)
    bundle = build.build_data(cfg, cache_folder=tmp_path / "cache")
    assert (bundle.train.cache is not None) == cached
    assert 8 * 24 * 48 * 3 <= 10**12 // 2 and 8 * 24 * 48 * 3 > 1000 // 2
