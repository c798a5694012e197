"""Stanford Online Products (Oh Song et al., 2016): 120,053 eBay photos of 22,634 products.

Layout (as unpacked from ``Stanford_Online_Products.zip``, possibly inside
``Stanford_Online_Products/``): ``Ebay_train.txt`` and ``Ebay_test.txt``, each with the header
``image_id class_id super_class_id path`` and one image per line, paths relative to the folder.
The files give the class-disjoint split (classes 1-11,318 train, 11,319-22,634 test); the 12
product categories are the super-labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.data.image_check import require_files
from dmlkit.data.layout import dataset_dir, download_into, read_table

# The original FTP host may be gone; the md5 is the one published with the zip.
URL = "ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip"
MD5 = "7f73d41a2f44250d4779881525aea32e"
NESTED = ("Stanford_Online_Products",)
HEADER = ["image_id", "class_id", "super_class_id", "path"]
MANUAL = (
    "; get Stanford_Online_Products.zip from https://cvgl.stanford.edu/projects/lifted_struct/ "
    "and unzip it into data.root"
)


def load_sop(root: str | Path | None = None, download: bool = False) -> Catalog:
    """Catalog of SOP: train/test from ``Ebay_train.txt``/``Ebay_test.txt``, super-labels."""
    root = Path(root or "data/sop")
    if download and not any((d / "Ebay_train.txt").is_file() for d in (root, root / NESTED[0])):
        download_into("sop", root, URL, MD5, note=MANUAL)
    base = dataset_dir("sop", root, "Ebay_train.txt", NESTED)
    labels, supers, paths, split = [], [], [], []
    for s in ("train", "test"):
        path = base / f"Ebay_{s}.txt"
        rows = read_table(path, (int, int, int, str), skip=1, header=HEADER)
        labels += [r[1] for r in rows]
        supers += [r[2] for r in rows]
        paths += [base / r[3] for r in rows]
        split += [s] * len(rows)
    require_files("sop", paths)
    return Catalog(
        name="sop",
        labels=np.array(labels, dtype=np.int64),
        split=np.array(split),
        paths=paths,
        super_labels=np.array(supers, dtype=np.int64),
    )
