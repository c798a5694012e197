"""The images of a folder to embed or index, with labels when it is laid out in class folders.

If no image sits directly in the folder, it is read like a training folder (`data.folder`):
``root/<class>/...`` or ``root/train|test/<class>/...``, labels = sorted class-folder positions.
Otherwise every image below the folder is listed, unlabeled. Hidden files are skipped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dmlkit.data.folder import IMAGE_EXTENSIONS, load_folder, scan_classes
from dmlkit.errors import DataError


@dataclass(frozen=True)
class ImageListing:
    """Image files under ``root`` (sorted), their labels (or None) and class names."""

    root: Path
    paths: list[Path]
    labels: np.ndarray | None = None
    class_names: dict[int, str] = field(default_factory=dict)

    @property
    def relative(self) -> list[str]:
        """Paths relative to ``root``, with ``/`` separators."""
        return [p.relative_to(self.root).as_posix() for p in self.paths]


def _is_image(entry: os.DirEntry) -> bool:
    name = entry.name
    return (entry.is_file() and not name.startswith(".")
            and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def list_images(root: str | Path) -> ImageListing:
    """The images under ``root`` (see the module doc)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    with os.scandir(root) as it:
        top = sorted(root / e.name for e in it if _is_image(e))
    if not top:
        cat = load_folder(root, name=str(root))
        return ImageListing(root, list(cat.paths), cat.labels, cat.class_names)
    nested = [p for files in scan_classes(root).values() for p in files]
    return ImageListing(root, top + nested)


def natural_key(path: Path) -> list:
    """Sort key reading digit runs as numbers: ``2.png`` before ``10.png``.

    >>> sorted(["q/10.png", "q/2.png", "q/1.png"], key=natural_key)
    ['q/1.png', 'q/2.png', 'q/10.png']
    """
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def expand_image_args(items: list[Path]) -> list[Path]:
    """Command-line image arguments: files as given, folders replaced by their images (in
    `natural_key` order)."""
    out: list[Path] = []
    for item in items:
        if item.is_dir():
            out += sorted(list_images(item).paths, key=natural_key)
        elif item.is_file():
            out.append(item)
        else:
            raise DataError(f"query image {item} does not exist")
    return out
