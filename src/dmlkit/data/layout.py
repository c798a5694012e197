"""What the benchmark loaders share: finding a dataset's folder, reading its annotation tables,
fetching its archives, and the literature splits of datasets that ship none."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dmlkit.data.download import fetch, safe_extract
from dmlkit.data.splits import split_classes
from dmlkit.errors import DataError


def dataset_dir(name: str, root: Path, marker: str, nested: Sequence[str] = ()) -> Path:
    """The folder holding ``marker``: ``root`` itself or ``root/<n>`` for ``n`` in ``nested``
    (official archives unpack into a folder of their own, e.g. ``CUB_200_2011/``)."""
    if not root.is_dir():
        raise DataError(
            f"{name}: directory {root} does not exist; set data.root (or data.download=true)"
        )
    for folder in (root, *(root / n for n in nested)):
        if (folder / marker).exists():
            return folder
    also = f" (or in {', '.join(f'{n}/' for n in nested)})" if nested else ""
    raise DataError(f"{name}: missing {marker} in {root}{also}")


def read_table(
    path: Path,
    types: Sequence[Callable[[str], object]],
    skip: int = 0,
    header: Sequence[str] | None = None,
) -> list[tuple]:
    """Rows of a whitespace-separated annotation file, field ``i`` converted by ``types[i]``.

    The first ``skip`` lines and blank lines are ignored; line ``skip`` must read ``header`` when
    one is given. The last field takes the rest of the line, so file names may contain spaces.
    Errors name the file and line.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise DataError(f"missing {path}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if header is not None and (len(lines) < skip or lines[skip - 1].split() != list(header)):
        raise DataError(f"{path} line {skip}: expected the header {' '.join(header)!r}")
    rows = []
    for number, line in enumerate(lines[skip:], start=skip + 1):
        fields = line.strip().split(maxsplit=len(types) - 1)
        if not fields:
            continue
        try:
            if len(fields) != len(types):
                raise ValueError(f"expected {len(types)} fields, got {len(fields)}")
            row = tuple(t(f) for t, f in zip(types, fields, strict=True))
            if any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in row):
                raise ValueError("a number is out of the int64 range")
            rows.append(row)
        except ValueError as e:
            raise DataError(f"{path} line {number}: {e} in {line.strip()!r}") from e
    return rows


def download_into(
    name: str, root: Path, url: str, md5: str | None, extract: bool = True, note: str = ""
) -> Path:
    """Fetch ``url`` into ``root`` (checksum verified) and unpack it there when ``extract``."""
    try:
        path = fetch(url, root / url.rsplit("/", 1)[-1], md5=md5)
    except DataError as e:
        raise DataError(f"{name}: {e}{note}") from e
    if extract:
        safe_extract(path, root)
    return path


def first_half_split(labels: np.ndarray) -> np.ndarray:
    """The class-disjoint split of DML papers: the first half of the sorted class ids is "train",
    the rest "test" (CUB classes 1-100 / 101-200, Cars196 1-98 / 99-196).

    >>> first_half_split(np.array([4, 1, 3, 2, 1])).tolist()
    ['test', 'train', 'test', 'train', 'train']
    """
    classes = np.unique(labels)
    return np.where(np.isin(labels, classes[split_classes(classes, None)]), "train", "test")


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A seeded ``round(test_fraction * n_c)`` of the ``n_c`` samples of each class is "test"
    (for datasets without an official split).

    >>> s = stratified_split(np.repeat([0, 1], 4), 0.25, seed=0)
    >>> [(s[:4] == "test").sum(), (s[4:] == "test").sum()]
    [np.int64(1), np.int64(1)]
    """
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "train", dtype="<U5")
    for c in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == c))
        split[index[: round(test_fraction * len(index))]] = "test"
    return split
