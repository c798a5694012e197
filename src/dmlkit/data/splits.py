"""Protocol splits of a Catalog: which samples train, validate and test, and how test is queried.

- ``zero_shot``: classes sorted; the first half (or ``train_classes``) train, the rest test
  (class-disjoint, as DML benchmarks). Train uses the official train images of the train
  classes and test the official test images of the test classes, unless ``all_images``. For
  CUB/Cars/SOP the official split is already class-disjoint, so both readings agree.
- ``closed_set``: the same classes in train and test (Guided DML's protocol); test images are
  queries and train images the reference set.
- ``official``: the catalog's split as is (In-Shop: test = query vs gallery).

``val_fraction`` holds out the last classes of the train classes (class-disjoint) for
validation during training. ``folds`` (zero_shot only) instead cuts the train classes into K
contiguous class ranges (`dmlkit.data.folds`): fold ``fold`` validates on range ``fold``
and trains on the other K - 1 (MLRC's class-disjoint cross-validation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.data.folds import fold_classes
from dmlkit.errors import DataError


@dataclass(frozen=True)
class EvalSplit:
    """A retrieval evaluation: queries and an optional separate reference (gallery) set."""

    query: Catalog
    reference: Catalog | None = None


@dataclass(frozen=True)
class Splits:
    """Training catalog, optional validation split and the test split."""

    train: Catalog
    val: EvalSplit | None
    test: EvalSplit


def _cap_mask(cat: Catalog, max_per_class: int | None, seed: int) -> np.ndarray:
    """Boolean mask: at most ``max_per_class`` images of each class in each official split
    (seeded; all True without a cap)."""
    if max_per_class is None:
        return np.ones(len(cat.labels), dtype=bool)
    rng = np.random.default_rng([seed, max_per_class])
    keep = np.zeros(len(cat.labels), dtype=bool)
    for c in cat.classes:
        for s in np.unique(cat.split):
            keep[rng.permutation(np.flatnonzero((cat.labels == c) & (cat.split == s)))
                 [:max_per_class]] = True
    return keep


def split_classes(classes: np.ndarray, train_classes: list[int] | None) -> np.ndarray:
    """Boolean mask over sorted ``classes``: True for training classes (default: first half)."""
    classes = np.sort(classes)
    if train_classes is None:
        return np.arange(len(classes)) < len(classes) // 2
    unknown = set(train_classes) - set(classes.tolist())
    if unknown:
        raise DataError(f"train_classes {sorted(unknown)} are not in the dataset")
    return np.isin(classes, train_classes)


def _check_folds(protocol: str, val_fraction: float, folds: int, fold: int | None) -> None:
    """Folds go with the zero_shot protocol and a chosen fold, and replace val_fraction."""
    if not folds:
        if fold is not None:
            raise DataError("data.fold needs data.folds (the number of folds)")
        return
    if protocol != "zero_shot":
        raise DataError(f"data.folds needs the zero_shot protocol, not {protocol!r}")
    if val_fraction > 0:
        raise DataError("data.folds and data.val_fraction both choose validation classes: "
                        "set one")
    if fold is None:
        raise DataError(f"data.folds={folds} needs data.fold (0..{folds - 1})")


def make_splits(
    cat: Catalog,
    protocol: str = "zero_shot",
    train_classes: list[int] | None = None,
    all_images: bool = False,
    val_fraction: float = 0.0,
    max_per_class: int | None = None,
    seed: int = 0,
    folds: int = 0,
    fold: int | None = None,
) -> Splits:
    """Cut a catalog into train / val / test following ``protocol`` (see module doc)."""
    _check_folds(protocol, val_fraction, folds, fold)
    keep = _cap_mask(cat, max_per_class, seed)  # the cap applies to training images only
    in_train_split = cat.split == "train"
    if protocol == "zero_shot":
        classes = cat.classes
        train_set = classes[split_classes(classes, train_classes)]
        is_train_class = np.isin(cat.labels, train_set)
        if len(train_set) == 0 or len(train_set) == len(classes):
            raise DataError("zero_shot split needs classes on both sides")
        train_mask = is_train_class & (in_train_split | all_images)
        test_mask = ~is_train_class & (~in_train_split | all_images)
        if not test_mask.any():  # datasets without an official test split
            test_mask = ~is_train_class
        train, test = cat.subset(train_mask & keep), EvalSplit(cat.subset(test_mask))
    elif protocol == "closed_set":
        train = cat.subset(in_train_split & keep)
        test = EvalSplit(query=cat.subset(~in_train_split), reference=train)
    elif protocol == "official":
        train = cat.subset(in_train_split & keep)
        rest = cat.subset(~in_train_split)
        if rest.is_query is not None:
            test = EvalSplit(rest.subset(rest.is_query), rest.subset(rest.is_gallery))
        else:
            test = EvalSplit(rest)
    else:
        raise DataError(f"unknown protocol {protocol!r}")
    if len(train) == 0 or len(test.query) == 0:
        raise DataError(f"protocol {protocol}: empty train or test split")
    val = None
    if folds:
        _, val_classes = fold_classes(train.classes, folds, fold)
        is_val = np.isin(train.labels, val_classes)
        val, train = EvalSplit(train.subset(is_val)), train.subset(~is_val)
    elif val_fraction > 0:
        classes = train.classes
        n_val = max(1, round(val_fraction * len(classes)))
        if n_val >= len(classes):
            raise DataError(f"val_fraction {val_fraction} leaves no training class")
        is_val = np.isin(train.labels, classes[-n_val:])
        val, train = EvalSplit(train.subset(is_val)), train.subset(~is_val)
    return Splits(train=train, val=val, test=test)
