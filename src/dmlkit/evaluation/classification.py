"""Nearest-neighbour classification scores: accuracy and macro precision / recall / F1.

Guided DML's official evaluation (``MyModel_*.py``, ``Metrics``) fits scikit-learn's
``KNeighborsClassifier(n_neighbors=1)`` on the reference (training) embeddings, predicts the
query (test) labels, and reports ``accuracy_score`` and the ``average='macro'``
``precision_score`` / ``recall_score`` / ``f1_score``. These are pure functions of the true and
predicted labels with scikit-learn's definitions: the class list is the union of true and
predicted labels; a class's precision is TP / #predicted, recall TP / #true, F1
2 TP / (#predicted + #true), each 0 where its denominator is 0 (scikit-learn's
``zero_division`` default); macro = the unweighted mean over classes.
"""

from __future__ import annotations

import numpy as np

from dmlkit.errors import EvaluationError

CLASSIFICATION_METRICS = ("nn_classification",)
CLASSIFICATION_KEYS = ("nn_accuracy", "nn_macro_precision", "nn_macro_recall", "nn_macro_f1")


def per_class_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class "labels", "precision", "recall", "f1" and "support" (# true), classes sorted:
    scikit-learn's ``precision_recall_fscore_support`` over the union of the labels.

    >>> s = per_class_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    >>> s["precision"].tolist(), s["recall"].tolist(), s["f1"].round(4).tolist()
    ([1.0, 0.6666666666666666], [0.5, 1.0], [0.6667, 0.8])
    """
    from sklearn.metrics import precision_recall_fscore_support  # on use: inference skips it

    true, pred = np.asarray(true), np.asarray(pred)
    labels = np.union1d(true, pred)
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, average=None, zero_division=0.0
    )
    return {"labels": labels, "precision": precision, "recall": recall, "f1": f1,
            "support": support}


def classification_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 of predicted labels (keys `CLASSIFICATION_KEYS`).

    >>> classification_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))["nn_accuracy"]
    0.75
    """
    true, pred = np.asarray(true), np.asarray(pred)
    if len(true) != len(pred):
        raise EvaluationError(f"{len(true)} true labels but {len(pred)} predictions")
    if len(true) == 0:
        return dict.fromkeys(CLASSIFICATION_KEYS, float("nan"))
    s = per_class_scores(true, pred)
    return {"nn_accuracy": float(np.mean(true == pred)),
            "nn_macro_precision": float(s["precision"].mean()),
            "nn_macro_recall": float(s["recall"].mean()),
            "nn_macro_f1": float(s["f1"].mean())}
