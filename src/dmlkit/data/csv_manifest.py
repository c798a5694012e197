"""CSV manifests: one image per row under the header ``path,label[,split,is_query,is_gallery]``.

``path`` is relative to the CSV's folder (or absolute), ``label`` an integer class id, ``split``
``train`` or ``test`` (default ``train``), ``is_query``/``is_gallery`` (together or not at all)
booleans written 1/0, true/false or yes/no. Other columns are ignored.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from dmlkit.data.catalog import SPLITS, Catalog
from dmlkit.errors import DataError

REQUIRED = ("path", "label")
FLAGS = ("is_query", "is_gallery")
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _flag(value: str, column: str) -> bool:
    if value.lower() not in _BOOLS:
        raise ValueError(f"{column} {value!r} is not a boolean (1/0, true/false, yes/no)")
    return _BOOLS[value.lower()]


def _row(row: dict, base: Path, has_split: bool, has_flags: bool) -> tuple:
    """(path, label, split, is_query, is_gallery) of one manifest row; ValueError if bad."""
    if None in row:
        raise ValueError(f"more fields than the header's {len(row) - 1}")
    if any(v is None for v in row.values()):
        raise ValueError(f"fewer fields than the header's {len(row)}")
    row = {k: v.strip() for k, v in row.items()}
    try:
        label = int(row["label"])
    except ValueError:
        raise ValueError(f"label {row['label']!r} is not an integer") from None
    if not -(2**63) <= label < 2**63:
        raise ValueError(f"label {label} is out of the int64 range")
    split = row["split"] if has_split else "train"
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    flags = tuple(_flag(row[c], c) for c in FLAGS) if has_flags else (False, False)
    path = base / row["path"]
    if not row["path"] or not path.is_file():
        raise ValueError(f"image file {row['path']!r} not found (looked for {path})")
    return path, label, split, *flags


def load_csv(root: str | Path | None = None, download: bool = False) -> Catalog:
    """Catalog of the manifest ``root`` (a .csv file, or a folder holding ``manifest.csv``)."""
    if root is None:
        raise DataError("csv: set data.root to the manifest (.csv with path,label[,...] columns)")
    if download:
        raise DataError("csv: a manifest cannot be downloaded; set data.download=false")
    path = Path(root)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise DataError(f"csv: missing {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise DataError(
                f"{path} line 1: the header lacks column(s) {', '.join(missing)} "
                f"(expected path,label[,split,is_query,is_gallery])"
            )
        if sum(c in columns for c in FLAGS) == 1:
            raise DataError(f"{path} line 1: is_query and is_gallery must both be columns")
        has_split, has_flags = "split" in columns, FLAGS[0] in columns
        for row in reader:
            rows.append(_row(row, path.parent, has_split, has_flags))
    except (ValueError, csv.Error) as e:
        raise DataError(f"{path} line {reader.line_num}: {e}") from e
    if not rows:
        raise DataError(f"{path}: no rows below the header")
    paths, labels, split, is_query, is_gallery = zip(*rows, strict=True)
    return Catalog(
        name="csv",
        labels=np.array(labels, dtype=np.int64),
        split=np.array(split),
        paths=list(paths),
        is_query=np.array(is_query) if has_flags else None,
        is_gallery=np.array(is_gallery) if has_flags else None,
    )
