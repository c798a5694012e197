import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.fixtures import (
    CIFAR10_NAMES,
    dump_py2,
    make_cifar10,
    make_cifar100,
    make_folder,
    tar_gz,
    write_image,
)
from dmlkit.data import cifar
from dmlkit.data.cifar import JPEG_ENV, load_cifar10, load_cifar10_jpeg
from dmlkit.data.folder import scan_classes
from dmlkit.data.registry import load_catalog
from dmlkit.errors import DataError

SHARED_JPEG = Path(__file__).resolve().parents[2].parent / "shared/data/cifar10-jpeg.tar.gz"


def _pixel(rows, i, r, c, ch):
    """Official layout by hand: channel plane, then row-major 32 x 32."""
    return rows[i, ch * 1024 + r * 32 + c]


def test_cifar10_python2_pickles(tmp_path):
    written = make_cifar10(tmp_path, per_batch=3)
    cat = load_catalog("cifar10", root=tmp_path)
    assert cat.images.shape == (18, 32, 32, 3) and cat.images.dtype == np.uint8
    assert cat.images.flags["C_CONTIGUOUS"]
    assert cat.labels.tolist() == written["labels"].tolist()
    assert cat.split.tolist() == ["train"] * 15 + ["test"] * 3
    assert cat.class_names == dict(enumerate(CIFAR10_NAMES))
    rows = written["rows"]
    for i, r, c, ch in [(0, 0, 0, 0), (4, 31, 0, 1), (17, 5, 31, 2), (9, 12, 7, 1)]:
        assert cat.images[i, r, c, ch] == _pixel(rows, i, r, c, ch)
    # the batches folder itself is accepted as root
    assert len(load_cifar10(tmp_path / "cifar-10-batches-py")) == 18


def test_cifar10_python3_pickles(tmp_path):
    written = make_cifar10(tmp_path, per_batch=2)
    base = tmp_path / "cifar-10-batches-py"
    for path in base.iterdir():  # re-save as a Python 3 user would: str keys, protocol 4
        batch = cifar.read_batch(path)
        path.write_bytes(pickle.dumps(batch, protocol=4))
    cat = load_cifar10(tmp_path)
    assert cat.labels.tolist() == written["labels"].tolist()
    assert cat.images[3, 1, 2, 0] == _pixel(written["rows"], 3, 1, 2, 0)


def test_cifar100_fine_and_coarse(tmp_path):
    written = make_cifar100(tmp_path, n_train=6, n_test=4)
    cat = load_catalog("cifar100", root=tmp_path)
    fine = np.concatenate([written["train"]["fine"], written["test"]["fine"]])
    assert cat.labels.tolist() == fine.tolist()
    assert cat.super_labels.tolist() == (fine // 5).tolist()
    assert cat.split.tolist() == ["train"] * 6 + ["test"] * 4
    assert cat.class_names[42] == "fine_42" and len(cat.class_names) == 100
    assert cat.images[7, 3, 4, 2] == _pixel(written["test"]["rows"], 1, 3, 4, 2)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_unpickler_refuses_other_callables(tmp_path):
    make_cifar10(tmp_path)
    target = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py/data_batch_2"
    path.write_bytes(pickle.dumps({"data": _Evil(str(target))}, protocol=4))
    with pytest.raises(DataError, match=r"data_batch_2: .*refusing to load \w+\.open"):
        load_cifar10(tmp_path)
    assert not target.exists()


def test_missing_and_corrupt_batches(tmp_path):
    with pytest.raises(DataError, match=r"missing batches.meta .*\(or in cifar-10-batches-py/\)"):
        load_cifar10(tmp_path)
    make_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    (base / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing .*data_batch_3"):
        load_cifar10(tmp_path)
    make_cifar10(tmp_path)
    (base / "test_batch").write_bytes((base / "test_batch").read_bytes()[:100])
    with pytest.raises(DataError, match=r"test_batch: not a readable CIFAR pickle batch"):
        load_cifar10(tmp_path)


def test_wrong_entries(tmp_path):
    make_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    dump_py2({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, base / "data_batch_1")
    with pytest.raises(DataError, match=r"data_batch_1: data is uint8 \(2, 100\)"):
        load_cifar10(tmp_path)
    dump_py2({"data": np.zeros((2, 3072), np.uint8)}, base / "data_batch_1")
    with pytest.raises(DataError, match=r"data_batch_1: no 'labels' entry"):
        load_cifar10(tmp_path)
    dump_py2({"data": np.zeros((2, 3072), np.uint8), "labels": [1]}, base / "data_batch_1")
    with pytest.raises(DataError, match=r"2 images but 1 labels"):
        load_cifar10(tmp_path)


def test_download_from_file_url(tmp_path, monkeypatch):
    make_cifar10(tmp_path / "src")
    archive = tar_gz(tmp_path / "src", tmp_path / "cifar-10-python.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(cifar.SOURCES, "cifar10", (archive.as_uri(), md5))
    assert len(load_cifar10(tmp_path / "dl", download=True)) == 18


# ------------------------------------------------------------ image-folder copy (JPEG)


def _jpeg_folder(root, per_class=2):
    return make_folder(root, classes=("truck", "airplane", "cat"), per_class=per_class,
                       splits=True, size=(32, 32))


def _decode(paths):
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def test_jpeg_folder_decoded_and_cached(tmp_path, monkeypatch):
    folder = _jpeg_folder(tmp_path / "jpeg", per_class=3)
    cat = load_cifar10_jpeg(folder, cache_dir=tmp_path / "cache", workers=2)
    assert cat.images.shape == (18, 32, 32, 3)
    assert cat.class_names == {0: "airplane", 1: "cat", 2: "truck"}
    assert cat.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] * 2
    assert cat.split.tolist() == ["train"] * 9 + ["test"] * 9
    paths = [folder / s / c / f"{j:04d}.jpg" for s in ("train", "test")
             for c in ("airplane", "cat", "truck") for j in range(3)]
    np.testing.assert_array_equal(cat.images, _decode(paths))
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == sorted(
        p.name for p in paths)  # nothing written into the dataset
    assert len(list((tmp_path / "cache" / "decoded").glob("cifar10-jpeg-*.npy"))) == 1

    real = cifar.decode_images

    def fail(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(cifar, "decode_images", fail)
    again = load_cifar10_jpeg(folder, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.images, cat.images)

    # issue 30, item 3: an image rewritten with the same byte size is decoded again
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(paths[0], quality=95)
    size = paths[0].stat().st_size
    Image.fromarray(np.full((32, 32, 3), 20, np.uint8)).save(paths[0], quality=95)
    assert paths[0].stat().st_size == size  # precondition: same size, other pixels
    monkeypatch.setattr(cifar, "decode_images", real)
    fresh = load_cifar10_jpeg(folder, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(fresh.images, _decode(paths))
    assert abs(int(fresh.images[0].mean()) - 20) <= 2


def test_jpeg_max_per_class_and_env(tmp_path, monkeypatch):
    folder = _jpeg_folder(tmp_path / "jpeg", per_class=3)
    monkeypatch.setenv(JPEG_ENV, str(folder))
    cat = load_catalog("cifar10-jpeg", max_per_class=1, cache_dir=tmp_path / "c")
    assert cat.labels.tolist() == [0, 1, 2, 0, 1, 2]
    np.testing.assert_array_equal(
        cat.images[1], _decode([folder / "train/cat/0000.jpg"])[0]
    )


def test_jpeg_read_only_folder_is_read_only_fine(tmp_path):
    folder = _jpeg_folder(tmp_path / "jpeg")
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir():
            p.chmod(0o555)
    try:
        load_cifar10_jpeg(folder, cache_dir=tmp_path / "cache")
    finally:
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
    assert len(list((tmp_path / "cache" / "decoded").glob("cifar10-jpeg-*.npy"))) == 1


def test_jpeg_archive_extracted_once(tmp_path, monkeypatch):
    archive = tar_gz(_jpeg_folder(tmp_path / "jpeg"), tmp_path / "cifar10-jpeg.tar.gz")
    cache = tmp_path / "cache"
    first = load_cifar10_jpeg(archive, cache_dir=cache)
    (extracted,) = cache.glob("cifar10-jpeg-*")
    assert sorted(p.name for p in extracted.iterdir() if not p.name.startswith(".")) == [
        "test", "train",
    ]
    monkeypatch.setattr(cifar, "safe_extract", lambda *a: pytest.fail("extracted twice"))
    np.testing.assert_array_equal(load_cifar10_jpeg(archive, cache_dir=cache).images, first.images)


def test_jpeg_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(JPEG_ENV, raising=False)
    with pytest.raises(DataError, match=JPEG_ENV):
        load_cifar10_jpeg()
    with pytest.raises(DataError, match=r"no download"):
        load_cifar10_jpeg(tmp_path, download=True)
    with pytest.raises(DataError, match=r"max_per_class must be at least 1"):
        load_cifar10_jpeg(tmp_path, max_per_class=0)
    with pytest.raises(DataError, match=r"does not exist"):
        load_cifar10_jpeg(tmp_path / "missing.tar.gz")
    folder = _jpeg_folder(tmp_path / "jpeg")
    odd = write_image(folder / "test/cat/0009.jpg", size=(30, 32))
    with pytest.raises(DataError, match=f"{odd} is 30x32, not 32x32"):
        load_cifar10_jpeg(folder, cache_dir=tmp_path / "c")
    odd.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"cannot decode image {odd}"):
        load_cifar10_jpeg(folder, cache_dir=tmp_path / "c")


@pytest.mark.skipif(
    not (os.environ.get(JPEG_ENV) or SHARED_JPEG.is_file()),
    reason="the CIFAR-10 JPEG copy (../shared/data/cifar10-jpeg.tar.gz) is absent",
)
def test_shared_cifar10_jpeg():
    """The real archive: official layout (5,000 / 1,000 per class), 32x32 RGB, sorted names in
    CIFAR-10's label order. Unpacked once into ~/.cache/dmlkit (about 7 s the first time)."""
    source = os.environ.get(JPEG_ENV) or SHARED_JPEG
    cat = load_cifar10_jpeg(source, max_per_class=2)
    assert cat.images.shape == (40, 32, 32, 3)
    assert cat.class_names == dict(enumerate(CIFAR10_NAMES))
    assert cat.labels.tolist() == [c for c in range(10) for _ in range(2)] * 2
    folder = cifar._extracted(Path(source), Path.home() / ".cache" / "dmlkit")
    for split, n in (("train", 5000), ("test", 1000)):
        counts = {c: len(files) for c, files in scan_classes(folder / split).items()}
        assert counts == dict.fromkeys(CIFAR10_NAMES, n)


def test_jpeg_cache_announced_once_and_moved_by_env(tmp_path, monkeypatch, capsys):
    """The unpacking and the decoding say where the cache goes, once; DMLKIT_CACHE_DIR moves
    the default cache folder."""
    archive = tar_gz(_jpeg_folder(tmp_path / "jpeg"), tmp_path / "cifar10-jpeg.tar.gz")
    cache = tmp_path / "elsewhere"
    monkeypatch.setenv(cifar.CACHE_ENV, str(cache))
    load_cifar10_jpeg(archive)
    (extracted,) = cache.glob("cifar10-jpeg-*")
    (decoded,) = (cache / "decoded").glob("cifar10-jpeg-*.npy")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"unpacking {archive} into {extracted} (once) ...",
        f"decoding the CIFAR-10 JPEGs once into the cache {decoded} (12) ...",
    ]
    load_cifar10_jpeg(archive)
    assert capsys.readouterr().err == ""
