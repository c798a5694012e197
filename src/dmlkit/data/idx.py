"""The MNIST family (MNIST, Fashion-MNIST, KMNIST) read from IDX files.

IDX format: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions D, then D
big-endian uint32 sizes and the data. Files may be gzip-compressed (``.gz``) or raw.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.data.download import fetch
from dmlkit.errors import DataError

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Official mirrors and md5 of the .gz files (the checksums torchvision publishes).
SOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "kmnist": (
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        {
            "train_images": "bdb82020997e1d708af4cf47b453dcf7",
            "train_labels": "e144d726b3acfaa3e44228e80efcd344",
            "test_images": "5c965bf0a639b31b8f53240b1b52f4d7",
            "test_labels": "7320c461ea6c1c855c0b718fb2a4b134",
        },
    ),
}

CLASS_NAMES = {
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    "mnist": [str(i) for i in range(10)],
}

DEFAULT_ROOTS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an uncompressed IDX byte string into a uint8 array.

    >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])).tolist()
    [7, 8, 9]
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise DataError(f"{source}: IDX type code {data[2]:#04x} is not uint8 (0x08)")
    ndim = data[3]
    if ndim < 1 or len(data) < 4 + 4 * ndim:
        raise DataError(f"{source}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    size = math.prod(shape)  # exact: sizes can multiply past int64
    if len(data) - offset != size:
        raise DataError(
            f"{source}: IDX header says {shape} ({size} bytes) but {len(data) - offset} follow"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read IDX file: {e}") from e
    return parse_idx(raw, str(path))


def _locate(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        for d in (root, root / "raw"):
            if (d / name).is_file():
                return d / name
    raise DataError(f"missing {stem}.gz (or {stem}) in {root}")


def load_idx_dataset(
    name: str, root: str | Path | None = None, download: bool = False
) -> Catalog:
    """Catalog of an MNIST-family dataset: 60k official train and 10k test images, 28x28x1."""
    if name not in SOURCES:
        raise DataError(f"unknown IDX dataset {name!r}; known: {sorted(SOURCES)}")
    root = Path(root or DEFAULT_ROOTS.get(name) or f"data/{name}")
    if download:
        base, md5s = SOURCES[name]
        for key, stem in _FILES.items():
            fetch(base + stem + ".gz", root / (stem + ".gz"), md5=md5s[key])
    if not root.is_dir():
        hint = " (apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
        raise DataError(
            f"{name}: directory {root} does not exist; set data.root or data.download=true{hint}"
        )
    arrays = {key: read_idx(_locate(root, stem)) for key, stem in _FILES.items()}
    images, labels, split = [], [], []
    for s in ("train", "test"):
        x, y = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{name} {s}: images {x.shape} do not match labels {y.shape}")
        images.append(x[..., None])
        labels.append(y.astype(np.int64))
        split.append(np.full(len(y), s))
    return Catalog(
        name=name,
        labels=np.concatenate(labels),
        split=np.concatenate(split),
        images=np.concatenate(images),
        class_names=dict(enumerate(CLASS_NAMES[name])),
    )
