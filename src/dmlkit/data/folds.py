"""Class-disjoint cross-validation folds (MLRC protocol, anchors.md 3.2).

The sorted train+val classes are cut into K contiguous ranges (sizes differ by at most one);
fold k validates on range k and trains on the other K - 1. Every class validates in exactly
one fold, and no class is both trained on and validated in the same fold.
"""

from __future__ import annotations

import numpy as np

from dmlkit.errors import DataError

MIN_VAL_CLASSES = 2  # MAP@R needs at least two classes to rank against each other


def class_folds(classes: np.ndarray, folds: int) -> list[np.ndarray]:
    """The sorted unique ``classes`` cut into ``folds`` contiguous class ranges.

    >>> [p.tolist() for p in class_folds(np.array([9, 3, 5, 1, 7, 2, 8, 0, 6, 4]), 4)]
    [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    """
    classes = np.unique(classes)
    if folds < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(classes) < MIN_VAL_CLASSES * folds:
        raise DataError(
            f"{folds} class-disjoint folds need at least {MIN_VAL_CLASSES * folds} train+val "
            f"classes ({MIN_VAL_CLASSES} per validation part), got {len(classes)}"
        )
    return np.array_split(classes, folds)


def fold_classes(classes: np.ndarray, folds: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train classes, validation classes) of fold ``fold`` of ``folds``.

    >>> train, val = fold_classes(np.arange(6), 3, 1)
    >>> train.tolist(), val.tolist()
    ([0, 1, 4, 5], [2, 3])
    """
    parts = class_folds(classes, folds)
    if not 0 <= fold < folds:
        raise DataError(f"fold {fold} is out of range for {folds} folds (0..{folds - 1})")
    train = np.concatenate([p for i, p in enumerate(parts) if i != fold])
    return train, parts[fold]
