import gzip
import hashlib

import numpy as np
import pytest

from dmlkit.data import idx
from dmlkit.data.idx import load_idx_dataset, parse_idx, read_idx
from dmlkit.data.registry import load_catalog
from dmlkit.errors import DataError


def idx_bytes(a: np.ndarray, type_code: int = 0x08) -> bytes:
    """Hand-written IDX encoding: 0, 0, type, ndim, big-endian uint32 sizes, data."""
    head = bytes([0, 0, type_code, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    return head + a.astype(np.uint8).tobytes()


def write_mnist(root, n_train=6, n_test=4, gz=True, names=None, seed=0):
    rng = np.random.default_rng(seed)
    data = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for key, a in data.items():
        stem = (names or idx._FILES)[key]
        raw = idx_bytes(a)
        (root / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_load_gz_and_raw(tmp_path, gz):
    data = write_mnist(tmp_path, gz=gz)
    cat = load_catalog("mnist", root=tmp_path)
    assert cat.images.shape == (10, 28, 28, 1) and cat.images.dtype == np.uint8
    np.testing.assert_array_equal(cat.images[:6, ..., 0], data["train_images"])
    np.testing.assert_array_equal(cat.images[6:, ..., 0], data["test_images"])
    assert cat.labels.tolist() == [*data["train_labels"].tolist(), *data["test_labels"].tolist()]
    assert cat.split.tolist() == ["train"] * 6 + ["test"] * 4
    assert cat.class_names[3] == "3"


def test_raw_subfolder_and_dotted_names(tmp_path):
    dotted = {k: v.replace("-idx", ".idx") for k, v in idx._FILES.items()}
    write_mnist(tmp_path / "raw", gz=False, names=dotted)
    cat = load_idx_dataset("fashion-mnist", tmp_path)
    assert len(cat) == 10 and cat.class_names[9] == "Ankle boot"


def test_parse_errors():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    good = idx_bytes(a)
    np.testing.assert_array_equal(parse_idx(good), a)
    with pytest.raises(DataError, match=r"bad magic"):
        parse_idx(b"\x01" + good[1:])
    with pytest.raises(DataError, match=r"type code 0x0d is not uint8"):
        parse_idx(idx_bytes(a, type_code=0x0D))
    with pytest.raises(DataError, match=r"truncated IDX header"):
        parse_idx(good[:9])
    with pytest.raises(DataError, match=r"header says \(3, 4\) \(12 bytes\) but 11 follow"):
        parse_idx(good[:-1])


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match=f"{path}: IDX header says"):
        load_idx_dataset("mnist", tmp_path)
    path.write_bytes(path.read_bytes()[:50])  # a cut gzip stream
    with pytest.raises(DataError, match=f"{path}: cannot read IDX file"):
        read_idx(path)
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 5)
    with pytest.raises(DataError, match=f"{path}: cannot read IDX file"):
        read_idx(path)


def test_missing_and_mismatched(tmp_path):
    with pytest.raises(DataError, match=r"does not exist"):
        load_idx_dataset("kmnist", tmp_path / "none")
    with pytest.raises(DataError, match=r"apt-get install dataset-fashion-mnist"):
        load_idx_dataset("fashion-mnist", tmp_path / "none")
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte.gz"):
        load_idx_dataset("mnist", tmp_path)
    write_mnist(tmp_path, n_test=3)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(5, np.uint8)))
    )
    with pytest.raises(DataError, match=r"mnist test: images \(3, 28, 28\) do not match"):
        load_idx_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match=r"unknown IDX dataset"):
        load_idx_dataset("emnist", tmp_path)


def test_download_from_file_urls(tmp_path, monkeypatch):
    data = write_mnist(tmp_path / "mirror")
    md5s = {k: hashlib.md5((tmp_path / "mirror" / (s + ".gz")).read_bytes()).hexdigest()
            for k, s in idx._FILES.items()}
    monkeypatch.setitem(idx.SOURCES, "mnist", ((tmp_path / "mirror").as_uri() + "/", md5s))
    cat = load_idx_dataset("mnist", tmp_path / "dl", download=True)
    np.testing.assert_array_equal(cat.images[6:, ..., 0], data["test_images"])
