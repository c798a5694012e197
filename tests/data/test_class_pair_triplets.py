from itertools import permutations

import numpy as np
import pytest

from dmlkit.data.class_pair_triplets import build_class_pair_triplets
from dmlkit.errors import ConfigError, DataError


@pytest.fixture
def labels() -> np.ndarray:
    rng = np.random.default_rng(3)
    # class sizes 9, 12, 10, 7 for ids 5, 2, 40, 9 (smallest 7 -> at most 3 per pair)
    return rng.permutation(np.repeat([5, 2, 40, 9], [9, 12, 10, 7]))


def test_blocks_follow_the_recipe(labels):
    t = build_class_pair_triplets(labels, batch_size=64, seed=0)
    assert len(t) == 12 and t.per_pair == 3 and t.num_triplets == 36
    for arr in (t.anchors, t.positives, t.negatives, t.pair_classes):
        assert arr.dtype == np.int64
    assert t.anchors.shape == t.positives.shape == t.negatives.shape == (12, 3)
    assert sorted(map(tuple, t.pair_classes.tolist())) == sorted(permutations([2, 5, 9, 40], 2))
    for k, (a, p, n) in enumerate(t):
        ci, cj = t.pair_classes[k]
        assert np.all(labels[a] == ci) and np.all(labels[p] == ci) and np.all(labels[n] == cj)
        assert len(set(a) | set(p)) == 2 * t.per_pair  # no repeats, anchors and positives disjoint
        assert len(set(n)) == t.per_pair


def test_batch_size_caps_the_block(labels):
    assert build_class_pair_triplets(labels, batch_size=2).per_pair == 2
    assert build_class_pair_triplets(labels, per_pair=1).per_pair == 1
    with pytest.raises(ConfigError):
        build_class_pair_triplets(labels, per_pair=4)
    with pytest.raises(ConfigError):
        build_class_pair_triplets(labels, batch_size=0)


def test_seeded_and_shuffled(labels):
    a, b = build_class_pair_triplets(labels, seed=1), build_class_pair_triplets(labels, seed=1)
    c = build_class_pair_triplets(labels, seed=2)
    for x, y in [
        (a.anchors, b.anchors),
        (a.negatives, b.negatives),
        (a.pair_classes, b.pair_classes),
    ]:
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.anchors, c.anchors)
    orders = {
        tuple(map(tuple, build_class_pair_triplets(labels, seed=s).pair_classes)) for s in range(4)
    }
    assert len(orders) > 1  # the pair order depends on the seed (not lexicographic)


def test_iteration_and_indexing(labels):
    t = build_class_pair_triplets(labels, batch_size=2)
    blocks = list(t)
    assert len(blocks) == len(t)
    np.testing.assert_array_equal(blocks[4][2], t.negatives[4])
    np.testing.assert_array_equal(t[4][0], t.anchors[4])


def test_errors():
    with pytest.raises(DataError, match=r"at least 2 classes"):
        build_class_pair_triplets(np.zeros(10, dtype=np.int64))
    with pytest.raises(DataError, match=r"\[3\]"):
        build_class_pair_triplets(np.array([0, 0, 1, 1, 3]))
    with pytest.raises(DataError):
        build_class_pair_triplets(np.array([[0, 1], [0, 1]]))
    with pytest.raises(DataError):
        build_class_pair_triplets(np.array([0.0, 1.0]))
