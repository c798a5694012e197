"""Dataset names -> loaders. Each loader takes (root, download, **options) and returns a Catalog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from dmlkit.data.catalog import Catalog
from dmlkit.data.digits import load_digits
from dmlkit.data.idx import load_idx_dataset
from dmlkit.errors import DataError


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader and a one-line description."""

    loader: Callable[..., Catalog]
    description: str
    needs_root: bool = True


def _no_root(fn: Callable[..., Catalog]) -> Callable[..., Catalog]:
    def load(root: str | Path | None = None, download: bool = False, **options) -> Catalog:
        return fn(**options)

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
        _no_root(load_digits), "scikit-learn digits, 1,797 8x8 grey, 10 classes", False
    ),
}


def load_catalog(
    name: str, root: str | Path | None = None, download: bool = False, **options
) -> Catalog:
    """Load dataset ``name`` from ``root`` (each dataset has its own default root)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name].loader(root=root, download=download, **options)
