"""Image-folder datasets: ``root/<class>/<image>``, or ``root/train/<class>/<image>`` plus
``root/test/<class>/<image>`` for an official split.

Class ids are the positions of the class-folder names in sorted order (over both splits);
images may sit at any depth below their class folder; hidden files and folders are skipped.
Without ``train/`` and ``test/`` every image is "train" and the protocol splits by class.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dmlkit.data.catalog import SPLITS, Catalog
from dmlkit.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


def scan_classes(folder: Path) -> dict[str, list[Path]]:
    """Class-folder name -> its image files (sorted), for the class folders holding any."""
    out: dict[str, list[Path]] = {}
    with os.scandir(folder) as it:
        entries = sorted((e for e in it if e.is_dir() and not e.name.startswith(".")),
                         key=lambda e: e.name)
    for entry in entries:
        files = []
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            parent = Path(dirpath)
            files += [
                parent / f for f in filenames
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
            ]
        if files:
            out[entry.name] = sorted(files)
    return out


def load_folder(
    root: str | Path | None = None, download: bool = False, name: str = "folder"
) -> Catalog:
    """Catalog of an image-folder tree (see the module doc); class names are the folder names."""
    if root is None:
        raise DataError(f"{name}: set data.root to a folder of class folders (root/<class>/...)")
    if download:
        raise DataError(f"{name}: an image folder cannot be downloaded; set data.download=false")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{name}: directory {root} does not exist")
    if all((root / s).is_dir() for s in SPLITS):
        parts = {s: scan_classes(root / s) for s in SPLITS}
    else:
        parts = {"train": scan_classes(root)}
    classes = sorted(set().union(*parts.values()))
    if not classes:
        raise DataError(
            f"{name}: no images in class folders under {root} "
            f"(expected {root}/<class>/<image> or {root}/train/<class>/<image>)"
        )
    ids = {c: i for i, c in enumerate(classes)}
    labels, split, paths = [], [], []
    for s, by_class in parts.items():
        for c, files in by_class.items():
            labels += [ids[c]] * len(files)
            split += [s] * len(files)
            paths += files
    return Catalog(
        name=name,
        labels=np.array(labels, dtype=np.int64),
        split=np.array(split),
        paths=paths,
        class_names=dict(enumerate(classes)),
    )
