"""`Catalog`: what every dataset loader returns, before any protocol split.

A catalog lists the samples of one dataset with their class labels, the official split of each
sample and, for query/gallery datasets (In-Shop), the query and gallery flags. Images are either
held in memory (`images`, uint8 N x H x W x C: the small datasets) or named by `paths` (decoded
lazily by DataLoader workers).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from dmlkit.errors import DataError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Catalog:
    """Samples of one dataset.

    Attributes:
        name: dataset name (e.g. ``"fashion-mnist"``).
        labels: int64 class ids, shape (N,). Ids are the dataset's own (not re-indexed).
        split: official split of each sample, ``"train"`` or ``"test"``, shape (N,).
        images: uint8 array N x H x W x C for in-memory datasets, else None.
        paths: image file paths for on-disk datasets, else None.
        is_query / is_gallery: bool flags for query/gallery datasets (In-Shop), else None.
        super_labels: optional coarse labels (SOP super-classes).
        class_names: optional mapping class id -> name.
        bboxes: optional float array N x 4 (x, y, w, h), e.g. CUB bounding boxes.
    """

    name: str
    labels: np.ndarray
    split: np.ndarray
    images: np.ndarray | None = None
    paths: list[Path] | None = None
    is_query: np.ndarray | None = None
    is_gallery: np.ndarray | None = None
    super_labels: np.ndarray | None = None
    class_names: dict[int, str] = field(default_factory=dict)
    bboxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        if (self.images is None) == (self.paths is None):
            raise DataError(f"{self.name}: a catalog needs exactly one of images or paths")
        sources = self.images if self.images is not None else self.paths
        if len(sources) != n or len(self.split) != n:
            raise DataError(
                f"{self.name}: {n} labels but {len(sources)} images and {len(self.split)} splits"
            )
        if self.images is not None and (self.images.ndim != 4 or self.images.dtype != np.uint8):
            raise DataError(f"{self.name}: in-memory images must be uint8 N x H x W x C")
        bad = set(np.unique(self.split).tolist()) - set(SPLITS)
        if bad:
            raise DataError(f"{self.name}: unknown split names {sorted(bad)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> np.ndarray:
        """Sorted unique class ids."""
        return np.unique(self.labels)

    def subset(self, index: np.ndarray) -> Catalog:
        """The catalog restricted to ``index`` (integer positions or a boolean mask)."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)

        def take(a):
            return None if a is None else a[index]

        return replace(
            self,
            labels=self.labels[index],
            split=self.split[index],
            images=take(self.images),
            paths=None if self.paths is None else [self.paths[i] for i in index],
            is_query=take(self.is_query),
            is_gallery=take(self.is_gallery),
            super_labels=take(self.super_labels),
            bboxes=take(self.bboxes),
        )

    def describe(self) -> dict:
        """Counts per split: classes and images (for ``dmlkit datasets --describe``)."""
        out: dict = {"name": self.name, "images": len(self), "classes": len(self.classes)}
        for s in SPLITS:
            mask = self.split == s
            out[s] = {"images": int(mask.sum()), "classes": len(np.unique(self.labels[mask]))}
        if self.is_query is not None:
            out["query"] = int(self.is_query.sum())
            out["gallery"] = int(self.is_gallery.sum())
        if self.images is not None:
            out["image_size"] = list(self.images.shape[1:])
        return out
