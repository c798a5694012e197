import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import DistanceWeightedMiner as PMLDistanceWeightedMiner
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from scipy.stats import chisquare

from dmlkit.errors import ConfigError, TrainingError
from dmlkit.miners.distance_weighted import DistanceWeightedMiner
from numeric import assert_whole_close


def _miner(seed: int = 0, **kwargs) -> DistanceWeightedMiner:
    return DistanceWeightedMiner(generator=torch.Generator().manual_seed(seed), **kwargs)


def _embeddings(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def _brute_probabilities(x, labels, exclude=None, cutoff=0.5, upper=1.4) -> list[list[float]]:
    rows = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in x.tolist()]
    d = len(rows[0])
    n = len(rows)
    labels = labels.tolist()
    exclude = exclude.tolist() if exclude is not None else list(range(n))
    out = []
    for i in range(n):
        log_w, valid = {}, []
        for j in range(n):
            if labels[i] == labels[j] or exclude[i] == exclude[j]:
                continue
            valid.append(j)
            dist = max(math.dist(rows[i], rows[j]), cutoff)
            if upper is None or dist < upper:
                log_w[j] = (2 - d) * math.log(dist) - (d - 3) / 2 * math.log(1 - dist * dist / 4)
        row = [0.0] * n
        if log_w:
            top = max(log_w.values())
            total = sum(math.exp(v - top) for v in log_w.values())
            for j, v in log_w.items():
                row[j] = math.exp(v - top) / total
        elif valid:
            for j in valid:
                row[j] = 1 / len(valid)
        out.append(row)
    return out


@pytest.mark.parametrize("upper", [1.4, 1.2, None])
def test_probabilities_match_brute_force(upper):
    x = _embeddings(12, 6, seed=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4])
    exclude = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    for exc in (None, exclude):
        probs = _miner(nonzero_loss_cutoff=upper).negative_probabilities(x, labels, exc)
        expected = torch.tensor(_brute_probabilities(x, labels, exc, upper=upper))
        assert_whole_close(probs, expected, msg=str(exc is not None))


def _check_triplets(a, p, n, labels, exclude=None):
    for t in (a, p, n):
        assert t.dtype == torch.long
    assert len(a) == len(p) == len(n)
    assert torch.all(a != p)
    assert torch.all(labels[a] == labels[p])
    assert torch.all(labels[a] != labels[n])
    if exclude is not None:
        assert torch.all(exclude[a] != exclude[n])


def test_positives_all_gives_every_ordered_pair():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
    a, p, n = _miner()(_embeddings(10, 8, seed=2), labels)
    _check_triplets(a, p, n, labels)
    counts = Counter(labels.tolist()).values()
    assert len(a) == sum(c * (c - 1) for c in counts)
    expected = {(i, j) for i in range(10) for j in range(10) if i != j and labels[i] == labels[j]}
    assert set(zip(a.tolist(), p.tolist(), strict=True)) == expected


def test_positives_one_gives_one_triplet_per_anchor():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
    a, p, n = _miner(positives="one")(_embeddings(10, 8, seed=3), labels)
    _check_triplets(a, p, n, labels)
    assert a.tolist() == list(range(9))  # sample 9 has no positive


def test_exclude_labels_shared_stream():
    surrogate = torch.arange(16) // 4
    classes = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7])
    x = _embeddings(16, 8, seed=4)
    for positives in ("all", "one"):
        for seed in range(20):
            a, p, n = _miner(seed, positives=positives, nonzero_loss_cutoff=None)(
                x, surrogate, exclude_labels=classes
            )
            _check_triplets(a, p, n, surrogate, classes)
            assert len(a) > 0


def test_anchors_without_valid_negative_are_dropped():
    # samples 0 and 1: every other sample shares their exclude-label -> no valid negative
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    exclude = torch.tensor([9, 9, 9, 9, 9, 9])
    exclude_partial = torch.tensor([7, 7, 7, 7, 8, 8])
    x = _embeddings(6, 4, seed=5)
    a, p, n = _miner(nonzero_loss_cutoff=None)(x, labels, exclude_labels=exclude)
    assert len(a) == len(p) == len(n) == 0
    a, p, n = _miner(nonzero_loss_cutoff=None)(x, labels, exclude_labels=exclude_partial)
    _check_triplets(a, p, n, labels, exclude_partial)
    assert set(a.tolist()) == {0, 1, 2, 3, 4, 5}
    assert set(n[a < 4].tolist()) <= {4, 5} and set(n[a >= 4].tolist()) <= {0, 1, 2, 3}


def test_edge_cases_are_empty_not_nan():
    miner = _miner()
    for x, labels in [
        (_embeddings(5, 4, seed=6), torch.zeros(5, dtype=torch.long)),  # one class
        (_embeddings(1, 4, seed=6), torch.zeros(1, dtype=torch.long)),  # batch of one
        (_embeddings(4, 4, seed=6), torch.arange(4)),  # no positive
    ]:
        for positives in ("all", "one"):
            miner.positives = positives
            out = miner(x, labels)
            assert [len(t) for t in out] == [0, 0, 0]
            assert all(t.dtype == torch.long for t in out)
            assert torch.isfinite(miner.negative_probabilities(x, labels)).all()


def test_upper_cutoff_and_uniform_fallback():
    # anchor 0 = e1; negatives at distances 0.9 (sample 2) and sqrt(2) (samples 3, 4)
    x = torch.tensor(
        [[1.0, 0, 0], [0.99, 0.1, 0], [0.6, 0.8, 0], [0, 1.0, 0], [0, 0, 1.0]], dtype=torch.float32
    )
    labels = torch.tensor([0, 0, 1, 2, 2])
    probs = _miner(nonzero_loss_cutoff=1.4).negative_probabilities(x, labels)
    assert probs[0].tolist() == pytest.approx([0, 0, 1, 0, 0])
    # all valid negatives cut (cutoff 0.8 < every distance) -> uniform over valid negatives
    probs = _miner(cutoff=0.1, nonzero_loss_cutoff=0.2).negative_probabilities(x, labels)
    assert probs[0].tolist() == pytest.approx([0, 0, 1 / 3, 1 / 3, 1 / 3])
    probs = _miner(nonzero_loss_cutoff=None).negative_probabilities(x, labels)
    assert (probs[0, 2:] > 0).all()
    for _ in range(50):
        a, _, n = _miner(nonzero_loss_cutoff=1.4)(x, labels)
        assert n[a == 0].tolist() == [2]


def test_empirical_distribution_matches_weights():
    x = _embeddings(8, 5, seed=7)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    miner = _miner(11, nonzero_loss_cutoff=None)
    probs = miner.negative_probabilities(x, labels)
    drawn = [[] for _ in range(8)]
    for _ in range(1500):
        a, _, n = miner(x, labels)
        for i, j in zip(a.tolist(), n.tolist(), strict=True):
            drawn[i].append(j)
    for i in range(7):  # sample 7 has no positive
        support = torch.nonzero(probs[i]).flatten().tolist()
        observed = [drawn[i].count(j) for j in support]
        assert sum(observed) == len(drawn[i])  # nothing outside the support
        p = probs[i, support].double()
        expected = (p / p.sum() * len(drawn[i])).tolist()
        assert chisquare(observed, expected).pvalue > 1e-4
        # the test has power: the weights are far from uniform
        uniform = [len(drawn[i]) / len(support)] * len(support)
        assert chisquare(observed, uniform).pvalue < 1e-6


def test_generator_makes_draws_reproducible():
    x, labels = _embeddings(12, 8, seed=8), torch.arange(12) // 3
    first = _miner(3)(x, labels)
    second = _miner(3)(x, labels)
    assert all(torch.equal(u, v) for u, v in zip(first, second, strict=True))


def _capture_pml_weights(monkeypatch, x, labels):
    captured = {}
    original = lmu.get_random_triplet_indices

    def capture(labels, ref_labels=None, t_per_anchor=None, weights=None):
        captured["weights"] = weights
        return original(labels, ref_labels=ref_labels, t_per_anchor=t_per_anchor, weights=weights)

    monkeypatch.setattr(lmu, "get_random_triplet_indices", capture)
    out = PMLDistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)(x, labels)
    return captured["weights"], out


def test_same_negative_distribution_as_pml(monkeypatch):
    x = _embeddings(16, 6, seed=9)
    labels = torch.arange(16) // 4
    pml_weights, _ = _capture_pml_weights(monkeypatch, x, labels)
    ours = _miner().negative_probabilities(x, labels)
    rows = torch.isfinite(pml_weights).all(dim=1)
    assert rows.sum() >= 12
    assert_whole_close(ours[rows], pml_weights[rows])


def test_row_max_survives_where_pml_global_max_underflows(monkeypatch):
    dim = 512
    e = torch.eye(dim)
    b0 = 0.155 * e[0] + math.sqrt(1 - 0.155**2) * e[2]
    x = torch.stack(
        [
            e[0],
            F.normalize(e[0] + 0.01 * e[4], dim=0),
            0.82 * e[0] + math.sqrt(1 - 0.82**2) * e[1],  # 0.6 from anchors 0, 1
            b0,  # about 1.3 from every other sample
            F.normalize(b0 + 0.01 * e[5], dim=0),
        ]
    )
    labels = torch.tensor([0, 0, 1, 2, 2])
    pml_weights, (pml_a, _, _) = _capture_pml_weights(monkeypatch, x, labels)
    assert not (pml_weights[3:].nan_to_num(0).sum(dim=1) > 0).any()  # underflow
    assert not set(pml_a.tolist()) & {3, 4}
    a, _, n = _miner()(x, labels)
    assert set(a.tolist()) == {0, 1, 3, 4}
    assert set(n[a >= 3].tolist()) <= {0, 1, 2}


def test_output_is_a_pml_indices_tuple():
    x = _embeddings(12, 8, seed=10).requires_grad_(True)
    labels = torch.arange(12) // 3
    a, p, n = _miner()(x, labels)
    loss = TripletMarginLoss(
        margin=0.2, distance=LpDistance(normalize_embeddings=False), reducer=MeanReducer()
    )(x, labels, indices_tuple=(a, p, n))
    expected = F.triplet_margin_loss(x[a], x[p], x[n], margin=0.2, eps=0.0)
    assert_whole_close(loss, expected)


def test_invalid_arguments():
    with pytest.raises(ConfigError):
        DistanceWeightedMiner(positives="some")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=0.4)
    with pytest.raises(ConfigError):
        DistanceWeightedMiner(cutoff=-1)
    with pytest.raises(TrainingError):
        DistanceWeightedMiner()(torch.randn(4, 3), torch.zeros(5))


def test_is_a_pml_miner_inside_cross_batch_memory():
    """PML's CrossBatchMemory calls miner(embeddings, labels, memory, memory_labels)."""
    from pytorch_metric_learning.losses import CrossBatchMemory
    from pytorch_metric_learning.miners import BaseMiner

    miner = _miner()
    assert isinstance(miner, BaseMiner)
    loss_fn = CrossBatchMemory(TripletMarginLoss(margin=0.2), embedding_size=8,
                               memory_size=32, miner=miner)
    for step in range(3):
        x = _embeddings(12, 8, seed=20 + step).requires_grad_(True)
        loss = loss_fn(x, torch.arange(12) % 4)
        loss.backward()
        assert torch.isfinite(loss) and miner.num_triplets > 0


def test_reference_set_negatives_and_positives():
    x, ref = _embeddings(6, 5, seed=30), _embeddings(10, 5, seed=31)
    labels, ref_labels = torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(10) % 3
    a, p, n = _miner()(x, labels, ref, ref_labels)
    assert (labels[a] == ref_labels[p]).all() and (labels[a] != ref_labels[n]).all()
    assert len(a) == sum(int((ref_labels == c).sum()) for c in labels)  # "all": every pair
    probs = _miner().negative_probabilities(x, labels, ref_emb=ref, ref_labels=ref_labels)
    assert probs.shape == (6, 10) and torch.allclose(probs.sum(1), torch.ones(6))
    with pytest.raises(TrainingError, match="exclude_labels"):
        _miner()(x, labels, ref, ref_labels, exclude_labels=labels)


def test_rejects_distances_pml_rejects():
    from pytorch_metric_learning.distances import CosineSimilarity

    with pytest.raises(ConfigError, match="LpDistance"):
        DistanceWeightedMiner(distance=CosineSimilarity())
