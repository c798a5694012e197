"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009): 60,000 32x32 colour images, 50k train, 10k test.

Read either from the official python pickle batches (``cifar-10-batches-py/``: ``data_batch_1``
to ``data_batch_5``, ``test_batch``, ``batches.meta``; ``cifar-100-python/``: ``train``,
``test``, ``meta``) through an unpickler that admits numpy arrays and plain data only, or from an
image-folder copy (``train/<class>/*.jpg``, ``test/<class>/*.jpg``, such as the JPEG
re-encoding ``cifar10-jpeg.tar.gz``), decoded once into memory and cached as ``.npy``.
A batch's ``data`` is N x 3072 uint8: the red, green and blue 32x32 planes, rows in order.
CIFAR-100 uses the 100 fine labels; the 20 coarse labels are the super-labels.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dmlkit.base.atomic_write import atomic_write_bytes
from dmlkit.base.progress import bar, phase
from dmlkit.data.catalog import SPLITS, Catalog
from dmlkit.data.download import file_digest, safe_extract
from dmlkit.data.folder import load_folder
from dmlkit.data.image_check import default_workers
from dmlkit.data.image_open import open_image
from dmlkit.data.layout import dataset_dir, download_into
from dmlkit.errors import DataError

SOURCES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85"),
}
JPEG_ENV = "DMLKIT_CIFAR10_JPEG"
CACHE_ENV = "DMLKIT_CACHE_DIR"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that admits numpy's array reconstruction and no other callable.

    Plain data (dict, list, bytes, str, int) needs no global; the official batches hold numpy
    arrays, pickled as ``_reconstruct(ndarray, ...)`` with a ``dtype``.
    """

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),  # written by numpy 1.x (the official files)
        ("numpy._core.multiarray", "_reconstruct"),  # written by numpy 2.x
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path) -> dict:
    """One pickle batch as a dict with str keys (Python 2 wrote the official files: their
    strings are read as bytes)."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as e:
        raise DataError(f"missing {path}") from e
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError,
            IndexError, AttributeError) as e:
        raise DataError(f"{path}: not a readable CIFAR pickle batch ({e})") from e
    if not isinstance(batch, dict):
        raise DataError(f"{path}: a CIFAR batch is a dict, found {type(batch).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _entry(batch: dict, key: str, path: Path):
    if key not in batch:
        raise DataError(f"{path}: no {key!r} entry (has {', '.join(sorted(map(str, batch)))})")
    return batch[key]


def _images(data, path: Path) -> np.ndarray:
    """N x 3072 planar rows -> uint8 N x 32 x 32 x 3."""
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 N x 3072")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _names(values) -> dict[int, str]:
    return {i: v.decode() if isinstance(v, bytes) else str(v) for i, v in enumerate(values)}


def _load_pickles(
    name: str, root: str | Path | None, download: bool, folder: str, meta: str,
    batches: list[tuple[str, str]], label_key: str, names_key: str, super_key: str | None,
) -> Catalog:
    root = Path(root or f"data/{name}")
    if download and not any((d / meta).is_file() for d in (root, root / folder)):
        download_into(name, root, *SOURCES[name])
    base = dataset_dir(name, root, meta, (folder,))
    images, labels, supers, split = [], [], [], []
    for file, s in batches:
        path = base / file
        batch = read_batch(path)
        x = _images(_entry(batch, "data", path), path)
        y = np.asarray(_entry(batch, label_key, path), dtype=np.int64)
        if len(y) != len(x):
            raise DataError(f"{path}: {len(x)} images but {len(y)} {label_key}")
        images.append(x)
        labels.append(y)
        split.append(np.full(len(y), s))
        if super_key:
            supers.append(np.asarray(_entry(batch, super_key, path), dtype=np.int64))
    return Catalog(
        name=name,
        labels=np.concatenate(labels),
        split=np.concatenate(split),
        images=np.ascontiguousarray(np.concatenate(images)),
        super_labels=np.concatenate(supers) if super_key else None,
        class_names=_names(_entry(read_batch(base / meta), names_key, base / meta)),
    )


def load_cifar10(root: str | Path | None = None, download: bool = False) -> Catalog:
    """CIFAR-10 from the official python batches: 10 classes, uint8 60000 x 32 x 32 x 3."""
    train = [(f"data_batch_{i}", "train") for i in range(1, 6)]
    return _load_pickles(
        "cifar10", root, download, "cifar-10-batches-py", "batches.meta",
        [*train, ("test_batch", "test")], "labels", "label_names", None,
    )


def load_cifar100(root: str | Path | None = None, download: bool = False) -> Catalog:
    """CIFAR-100 from the official python files: 100 fine classes, 20 coarse super-labels."""
    return _load_pickles(
        "cifar100", root, download, "cifar-100-python", "meta",
        [("train", "train"), ("test", "test")], "fine_labels", "fine_label_names",
        "coarse_labels",
    )


def decode_images(paths: list[Path], workers: int | None = None,
                  describe: str | None = None) -> np.ndarray:
    """Decode image files (in a thread pool) into one uint8 N x H x W x 3 RGB array.

    Every image must have the size of the first; errors name the offending file. ``describe``
    shows a progress bar over the images on stderr.
    """
    def read(path: Path) -> np.ndarray:
        with open_image(path) as im:
            return np.asarray(im.convert("RGB"))

    first = read(paths[0])
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)

    def fill(i: int) -> None:
        a = read(paths[i])
        if a.shape != first.shape:
            raise DataError(
                f"{paths[i]} is {a.shape[1]}x{a.shape[0]}, "
                f"not {first.shape[1]}x{first.shape[0]} like {paths[0]}"
            )
        out[i] = a

    with ThreadPoolExecutor(workers or default_workers()) as pool, \
            bar(describe or "", len(paths), describe is not None) as advance:
        for _ in pool.map(fill, range(len(paths))):
            advance(1)
    return out


def _extracted(source: Path, cache_dir: Path) -> Path:
    """``source`` if it is a folder, else the folder its archive unpacks to under ``cache_dir``
    (named by the archive's sha256, unpacked once, atomically)."""
    if source.is_dir():
        return source
    if not source.is_file():
        raise DataError(f"cifar10-jpeg: {source} does not exist")
    target = cache_dir / f"cifar10-jpeg-{file_digest(source, 'sha256')[:16]}"
    if target.is_dir():
        return target
    failed = f"cifar10-jpeg: cannot unpack {source} into {cache_dir}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache_dir))
    except OSError as e:
        raise DataError(f"{failed}: {e}") from e
    try:
        with phase(f"unpacking {source} into {target} (once)"):
            safe_extract(source, tmp)
        tmp.chmod(0o755)
        tmp.rename(target)
    except OSError as e:
        if not target.is_dir():  # else another process unpacked it first
            raise DataError(f"{failed}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cached_decode(paths: list[Path], folder: Path, cache_dir: Path, workers: int | None):
    """``decode_images(paths)``, cached as .npy under ``cache_dir/decoded`` (never in the
    dataset's folder), keyed by a hash of each file's relative name, size, modification time
    (ns) and inode: a file rewritten (even with the same size) or replaced gets a new key."""
    start = len(str(folder)) + 1  # the paths lie below folder: hash their relative names
    stats = ((str(p)[start:], os.stat(p)) for p in paths)
    listing = "\n".join(f"{name} {s.st_size} {s.st_mtime_ns} {s.st_ino}" for name, s in stats)
    key = hashlib.sha256(listing.encode()).hexdigest()[:16]
    home = cache_dir / "decoded"
    cache = home / f"cifar10-jpeg-{key}.npy"
    if cache.is_file():
        try:
            images = np.load(cache)
            if images.dtype == np.uint8 and images.ndim == 4 and len(images) == len(paths):
                return images
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    images = decode_images(paths, workers,
                           f"decoding the CIFAR-10 JPEGs once into the cache {cache}")
    try:
        buf = io.BytesIO()
        np.save(buf, images)
        atomic_write_bytes(cache, buf.getvalue())
    except OSError as e:
        warnings.warn(f"cifar10-jpeg: could not cache decoded images in {home}: {e}", stacklevel=2)
    return images


def load_cifar10_jpeg(
    root: str | Path | None = None,
    download: bool = False,
    max_per_class: int | None = None,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> Catalog:
    """CIFAR-10 from an image-folder copy, decoded into uint8 N x 32 x 32 x 3.

    ``root`` (or the environment variable ``DMLKIT_CIFAR10_JPEG``) is the folder or a
    ``.tar.gz`` of it, unpacked into ``cache_dir`` (default: the environment variable
    ``DMLKIT_CACHE_DIR``, else ``~/.cache/dmlkit``).
    ``max_per_class`` keeps the first images (sorted names) of each class in each split.
    """
    if download:
        raise DataError(
            "cifar10-jpeg: this copy has no download; use the cifar10 dataset (the official "
            "pickles) with data.download=true"
        )
    if max_per_class is not None and max_per_class < 1:
        raise DataError(f"cifar10-jpeg: max_per_class must be at least 1, not {max_per_class}")
    source = root or os.environ.get(JPEG_ENV)
    if not source:
        raise DataError(
            f"cifar10-jpeg: set data.root or {JPEG_ENV} to cifar10-jpeg.tar.gz or its folder"
        )
    cache_dir = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dmlkit"
                     ).expanduser()
    folder = _extracted(Path(source).expanduser(), cache_dir)
    cat = load_folder(folder, name="cifar10-jpeg")
    if max_per_class is not None:
        keep = np.zeros(len(cat), dtype=bool)
        for s in SPLITS:
            for c in cat.classes:
                keep[np.flatnonzero((cat.split == s) & (cat.labels == c))[:max_per_class]] = True
        cat = cat.subset(keep)
    return Catalog(
        name="cifar10-jpeg",
        labels=cat.labels,
        split=cat.split,
        images=_cached_decode(cat.paths, folder, cache_dir, workers),
        class_names=cat.class_names,
    )
