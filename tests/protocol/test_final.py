import numpy as np
import pytest
import torch

from dmlkit.protocol.final import ensemble_metrics


def brute_force(x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """P@1 and MAP@R, compared to self, Euclidean, by explicit loops."""
    p1, maps = [], []
    for i in range(len(x)):
        others = [j for j in range(len(x)) if j != i]
        order = sorted(others, key=lambda j: (np.sum((x[i] - x[j]) ** 2), j))
        r = sum(labels[j] == labels[i] for j in others)
        hits, ap = 0, 0.0
        for rank, j in enumerate(order[:r], start=1):
            if labels[j] == labels[i]:
                hits += 1
                ap += hits / rank
        p1.append(float(labels[order[0]] == labels[i]))
        maps.append(ap / r)
    return {"precision_at_1": float(np.mean(p1)), "map_at_r": float(np.mean(maps))}


def test_separated_and_concatenated_match_hand_computation():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 5)
    models = [rng.normal(size=(15, 4)) * rng.uniform(0.5, 3.0, size=(15, 1)) for _ in range(3)]
    out = ensemble_metrics([torch.tensor(m) for m in models], labels,
                           metrics=["precision_at_1", "map_at_r"])
    for got, m in zip(out["separated"], models, strict=True):
        assert got == pytest.approx(brute_force(m, labels))
    concat = np.hstack([m / np.linalg.norm(m, axis=1, keepdims=True) for m in models])
    assert out["concatenated"] == pytest.approx(brute_force(concat, labels))
    # the concatenation is a different embedding from every part
    assert all(out["concatenated"] != s for s in out["separated"])


def test_concatenated_with_a_separate_reference_set():
    q = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 2.0], [2.0, 0.0]])]
    r = [torch.tensor([[1.0, 0.1], [0.1, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])]
    out = ensemble_metrics(q, [0, 1], r, [0, 1], metrics=["precision_at_1"])
    assert [s["precision_at_1"] for s in out["separated"]] == [1.0, 1.0]
    assert out["concatenated"]["precision_at_1"] == 1.0
