"""CUB-200-2011 (Wah et al., 2011): 11,788 photos of 200 bird species.

Layout (as unpacked from ``CUB_200_2011.tgz``, possibly inside ``CUB_200_2011/``):
``images.txt`` (image id, path under ``images/``), ``image_class_labels.txt`` (image id, class
id), ``classes.txt`` (class id, ``NNN.Name``) and, optionally, ``bounding_boxes.txt`` (image id,
x, y, width, height). DML split: classes 1-100 train, 101-200 test (the first half of the sorted
class ids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.data.image_check import require_files
from dmlkit.data.layout import dataset_dir, download_into, first_half_split, read_table
from dmlkit.errors import DataError

URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
MD5 = "97eceeb196236b17998738112f37df78"
NESTED = ("CUB_200_2011",)


def _by_image_id(table: list[tuple], ids: list[int], path: Path) -> list[tuple]:
    """Rows of ``table`` (keyed by image id in column 0) in the order of ``ids``."""
    rows = {row[0]: row[1:] for row in table}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise DataError(f"{path}: no row for image id {missing[0]} ({len(missing)} missing)")
    return [rows[i] for i in ids]


def load_cub(root: str | Path | None = None, download: bool = False) -> Catalog:
    """Catalog of CUB-200-2011 with class names, bounding boxes and the 100/100 class split."""
    root = Path(root or "data/cub200")
    if download and not any((d / "images.txt").is_file() for d in (root, root / NESTED[0])):
        download_into("cub200", root, URL, MD5)
    base = dataset_dir("cub200", root, "images.txt", NESTED)
    images = read_table(base / "images.txt", (int, str))
    ids = [i for i, _ in images]
    labels = _by_image_id(
        read_table(base / "image_class_labels.txt", (int, int)), ids,
        base / "image_class_labels.txt",
    )
    names = read_table(base / "classes.txt", (int, str))
    labels = np.array([c for (c,) in labels], dtype=np.int64)
    paths = [base / "images" / p for _, p in images]
    require_files("cub200", paths)
    bboxes = None
    if (base / "bounding_boxes.txt").is_file():
        table = read_table(base / "bounding_boxes.txt", (int, float, float, float, float))
        bboxes = np.array(_by_image_id(table, ids, base / "bounding_boxes.txt"), dtype=float)
    return Catalog(
        name="cub200",
        labels=labels,
        split=first_half_split(labels),
        paths=paths,
        class_names={c: n.split(".", 1)[-1] for c, n in names},
        bboxes=bboxes,
    )
