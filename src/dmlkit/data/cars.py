"""Cars196 (Stanford Cars; Krause et al., 2013): 16,185 photos of 196 car models.

Two official layouts are read:

- ``cars_annos.mat`` + ``car_ims/``: one struct array ``annotations`` with fields
  ``relative_im_path``, ``bbox_x1``, ``bbox_y1``, ``bbox_x2``, ``bbox_y2``, ``class``, ``test``
  and a cell array ``class_names``;
- the devkit: ``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat`` (in
  ``devkit/`` or the root; fields ``bbox_*``, ``class``, ``fname``), ``devkit/cars_meta.mat``
  (``class_names``), images in ``cars_train/`` and ``cars_test/``.

DML split: classes 1-98 train, 99-196 test, every image of a class on its side (the official
image-level train/test split is not used). Boxes are stored as (x1, y1, x2 - x1, y2 - y1) in the
file's pixel coordinates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.data.image_check import require_files
from dmlkit.data.layout import download_into, first_half_split
from dmlkit.errors import DataError

# The original hosts (ai.stanford.edu/~jkrause/car196/) no longer serve the files; the md5s are
# the ones published with them (also used by PML's and torchvision's old loaders).
IMAGES_URL = "http://ai.stanford.edu/~jkrause/car196/car_ims.tgz"
IMAGES_MD5 = "d5c8f0aa497503f355e17dc7886c3f14"
ANNOS_URL = "http://ai.stanford.edu/~jkrause/car196/cars_annos.mat"
ANNOS_MD5 = "b407c6086d669747186bd1d764ff9dbc"
MANUAL = (
    "; the Stanford host is gone: get car_ims.tgz and cars_annos.mat (or the devkit layout) "
    "from a mirror and unpack them into data.root"
)
_BOX = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")


def _read_mat(path: Path) -> dict:
    """Variables of a MATLAB file, arrays squeezed (a 1 x N struct array becomes 1-D)."""
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=True)
    except FileNotFoundError as e:
        raise DataError(f"cars196: missing {path}") from e
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"cars196: cannot read {path}: {e}") from e


def _annotations(path: Path, fields: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict]:
    """Columns ``fields`` of the ``annotations`` struct array in ``path``, and all variables."""
    mat = _read_mat(path)
    if "annotations" not in mat:
        raise DataError(f"cars196: {path} has no variable 'annotations'")
    ann = np.atleast_1d(mat["annotations"])
    missing = [f for f in fields if f not in (ann.dtype.names or ())]
    if missing:
        raise DataError(f"cars196: {path} annotations lack field(s) {', '.join(missing)}")
    return {f: np.asarray(ann[f].tolist()) for f in fields}, mat


def _class_names(mat: dict) -> dict[int, str]:
    """Class id (1-based) -> name from a ``class_names`` cell array, if there is one."""
    names = np.atleast_1d(mat.get("class_names", np.array([])))
    return {i + 1: str(n) for i, n in enumerate(names)}


def _devkit_test_annos(root: Path) -> Path:
    for path in (root / "devkit" / "cars_test_annos_withlabels.mat",
                 root / "cars_test_annos_withlabels.mat"):
        if path.is_file():
            return path
    raise DataError(
        f"cars196: missing cars_test_annos_withlabels.mat in {root}/devkit or {root} "
        "(devkit/cars_test_annos.mat has no class labels)"
    )


def load_cars(root: str | Path | None = None, download: bool = False) -> Catalog:
    """Catalog of Cars196 with class names, bounding boxes and the 98/98 class split."""
    root = Path(root or "data/cars196")
    single = root / "cars_annos.mat"
    devkit = root / "devkit" / "cars_train_annos.mat"
    if download and not (single.is_file() or devkit.is_file()):
        download_into("cars196", root, IMAGES_URL, IMAGES_MD5, note=MANUAL)
        download_into("cars196", root, ANNOS_URL, ANNOS_MD5, extract=False, note=MANUAL)
    if single.is_file():
        cols, mat = _annotations(single, ("relative_im_path", "class", *_BOX))
        paths = [root / p for p in cols["relative_im_path"]]
        names = _class_names(mat)
    elif devkit.is_file():
        parts = [
            (_annotations(path, ("fname", "class", *_BOX))[0], root / folder)
            for path, folder in ((devkit, "cars_train"), (_devkit_test_annos(root), "cars_test"))
        ]
        cols = {k: np.concatenate([c[k] for c, _ in parts]) for k in ("class", *_BOX)}
        paths = [folder / f for c, folder in parts for f in c["fname"]]
        meta = root / "devkit" / "cars_meta.mat"
        names = _class_names(_read_mat(meta)) if meta.is_file() else {}
    else:
        raise DataError(
            f"cars196: missing cars_annos.mat (with car_ims/) or devkit/cars_train_annos.mat "
            f"in {root}; set data.root"
        )
    require_files("cars196", paths)
    labels = cols["class"].astype(np.int64)
    x1, y1, x2, y2 = (cols[k].astype(float) for k in _BOX)
    return Catalog(
        name="cars196",
        labels=labels,
        split=first_half_split(labels),
        paths=paths,
        class_names=names,
        bboxes=np.stack([x1, y1, x2 - x1, y2 - y1], axis=1),
    )

