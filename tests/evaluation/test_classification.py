import numpy as np
import pytest
import torch
from sklearn import metrics
from sklearn.neighbors import KNeighborsClassifier

from dmlkit.errors import EvaluationError
from dmlkit.evaluation import evaluate
from dmlkit.evaluation.classification import classification_scores, per_class_scores


def _sklearn(true, pred) -> dict[str, float]:
    """The official Guided DML ``Metrics``: accuracy and macro precision / recall / F1."""
    kw = {"average": "macro", "zero_division": 0}
    return {"nn_accuracy": metrics.accuracy_score(true, pred),
            "nn_macro_precision": metrics.precision_score(true, pred, **kw),
            "nn_macro_recall": metrics.recall_score(true, pred, **kw),
            "nn_macro_f1": metrics.f1_score(true, pred, **kw)}


@pytest.mark.parametrize("seed", range(6))
def test_scores_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n, c = rng.integers(5, 200), rng.integers(2, 12)
    true = rng.integers(0, c, n)
    pred = np.where(rng.random(n) < 0.5, true, rng.integers(0, c + 2, n))  # unseen labels too
    got, want = classification_scores(true, pred), _sklearn(true, pred)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12)
    p, r, f, support = metrics.precision_recall_fscore_support(true, pred, zero_division=0)
    s = per_class_scores(true, pred)
    np.testing.assert_allclose(np.stack([s["precision"], s["recall"], s["f1"]]),
                               np.stack([p, r, f]), rtol=1e-12, atol=1e-12)
    assert np.array_equal(s["support"], support)


def test_mismatched_lengths_fail_and_empty_is_nan():
    with pytest.raises(EvaluationError, match="3 true labels but 2"):
        classification_scores(np.array([0, 1, 1]), np.array([0, 1]))
    assert all(np.isnan(v) for v in classification_scores(np.array([]), np.array([])).values())


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_closed_set_1nn_equals_the_official_sklearn_classifier(distance):
    # official: KNeighborsClassifier(n_neighbors=1).fit(train emb).predict(test emb)
    rng = np.random.default_rng(1)
    ref, ref_y = rng.normal(size=(300, 3)), rng.integers(0, 5, 300)
    query = rng.normal(size=(120, 3))
    query_y = np.where(rng.random(120) < 0.7,
                       KNeighborsClassifier(1).fit(ref, ref_y).predict(query),
                       rng.integers(0, 5, 120))
    fit_ref, fit_query = ref, query
    if distance == "cosine":
        fit_ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
        fit_query = query / np.linalg.norm(query, axis=1, keepdims=True)
    pred = KNeighborsClassifier(n_neighbors=1).fit(fit_ref, ref_y).predict(fit_query)
    got = evaluate(torch.tensor(query), query_y, torch.tensor(ref), ref_y, distance=distance,
                   metrics=["precision_at_1", "nn_classification"])
    want = _sklearn(query_y, pred)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9)
    # no lone queries: 1-NN accuracy is P@1
    assert got["nn_accuracy"] == pytest.approx(got["precision_at_1"], rel=1e-12)


def test_self_mode_predicts_from_the_nearest_other_item():
    x = torch.tensor([[0.0], [0.1], [1.0], [1.05], [5.0]])
    y = [0, 1, 1, 1, 2]  # label 2 is lone: it is still classified (by its nearest other item)
    got = evaluate(x, y, metrics=["nn_classification"])
    want = _sklearn(np.array(y), np.array([1, 0, 1, 1, 1]))
    assert got == pytest.approx(want)
    assert "nn_accuracy" not in evaluate(x, y)  # only when named
