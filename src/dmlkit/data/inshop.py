"""DeepFashion In-Shop Clothes Retrieval (Liu et al., 2016): 52,712 photos of 7,982 items.

Layout: ``list_eval_partition.txt`` (in the root or in ``Eval/``): a count line, the header
``image_name item_id evaluation_status``, then one image per line with status ``train``,
``query`` or ``gallery``; image names (``img/...``) are relative to the root (images unpacked
from ``img.zip``; names without the ``img/`` folder are accepted too). Labels are the item numbers
(``id_00000001`` -> 1); train rows are split "train", query and gallery rows "test" with the
query/gallery flags set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.data.image_check import require_files
from dmlkit.data.layout import dataset_dir, read_table
from dmlkit.errors import DataError

HEADER = ("image_name", "item_id", "evaluation_status")
STATUSES = ("train", "query", "gallery")
PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html"


def _item_number(item: str) -> int:
    """``"id_00000042"`` -> 42."""
    if not item.startswith("id_") or not item[3:].isdigit():
        raise ValueError(f"item id {item!r} is not of the form id_NNNNNNNN")
    return int(item[3:])


def _status(status: str) -> str:
    if status not in STATUSES:
        raise ValueError(f"evaluation status {status!r} is not one of {', '.join(STATUSES)}")
    return status


def load_inshop(root: str | Path | None = None, download: bool = False) -> Catalog:
    """Catalog of In-Shop: train items, and query/gallery images of the test items."""
    root = Path(root or "data/inshop")
    marker = "list_eval_partition.txt"
    if download and not any((d / marker).is_file() for d in (root, root / "Eval")):
        raise DataError(
            f"inshop: DeepFashion In-Shop is only distributed through Google Drive, which cannot "
            f"be fetched automatically; download img.zip and Eval/{marker} from {PAGE} and "
            f"unpack them into {root}"
        )
    path = dataset_dir("inshop", root, marker, ("Eval",)) / marker
    rows = read_table(path, (str, _item_number, _status), skip=2, header=HEADER)
    with open(path, encoding="utf-8") as f:
        count = f.readline().strip()
    if count != str(len(rows)):
        raise DataError(f"{path} line 1: says {count!r} images but {len(rows)} are listed")
    names = [r[0] for r in rows]
    first = names[0] if names else ""
    if first.startswith("img/") and not (root / first).is_file() and (root / first[4:]).is_file():
        names = [n.removeprefix("img/") for n in names]  # img.zip unpacked without its folder
    paths = [root / n for n in names]
    require_files("inshop", paths)
    status = np.array([r[2] for r in rows])
    return Catalog(
        name="inshop",
        labels=np.array([r[1] for r in rows], dtype=np.int64),
        split=np.where(status == "train", "train", "test"),
        paths=paths,
        is_query=status == "query",
        is_gallery=status == "gallery",
    )
