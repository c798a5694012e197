import numpy as np
import pytest

from dmlkit import config
from dmlkit.data.build import build_data
from dmlkit.data.catalog import Catalog
from dmlkit.data.folds import class_folds, fold_classes
from dmlkit.data.splits import make_splits
from dmlkit.errors import DataError


def catalog(n_classes=16, n_per=4):
    classes = np.arange(n_classes) * 3 + 7  # non-contiguous ids, to test sorting not values
    labels = np.repeat(classes, n_per)
    split = np.tile(np.array(["train", "train", "test", "test"]), n_classes)
    return Catalog("t", labels, split, images=np.zeros((len(labels), 4, 4, 1), np.uint8))


@pytest.mark.parametrize(("n", "k"), [(8, 4), (10, 4), (11, 3), (100, 4), (5, 2)])
def test_folds_partition_sorted_classes_into_contiguous_ranges(n, k):
    rng = np.random.default_rng(n)
    classes = rng.permutation(np.arange(n) * 5)
    parts = class_folds(classes, k)
    assert len(parts) == k
    flat = np.concatenate(parts)
    assert flat.tolist() == sorted(classes.tolist())  # coverage, order, no duplicates
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 2
    ranks = {c: i for i, c in enumerate(sorted(classes.tolist()))}
    for p in parts:  # contiguous in the sorted order
        r = [ranks[c] for c in p.tolist()]
        assert r == list(range(r[0], r[0] + len(r)))


def test_every_class_validates_exactly_once_and_never_trains_in_its_fold():
    classes = np.arange(12)
    seen = []
    for k in range(4):
        train, val = fold_classes(classes, 4, k)
        assert not set(train.tolist()) & set(val.tolist())
        assert sorted(train.tolist() + val.tolist()) == classes.tolist()
        seen += val.tolist()
    assert sorted(seen) == classes.tolist()


@pytest.mark.parametrize(("n", "k", "fold", "message"), [
    (7, 4, 0, "at least 8"), (10, 1, 0, "at least 2 folds"), (10, 4, 4, "out of range"),
    (10, 4, -1, "out of range")])
def test_fold_errors(n, k, fold, message):
    with pytest.raises(DataError, match=message):
        fold_classes(np.arange(n), k, fold)


def test_make_splits_folds_cut_the_train_half():
    cat = catalog()
    classes = np.unique(cat.labels)
    first, second = set(classes[:8].tolist()), set(classes[8:].tolist())
    vals = []
    for k in range(4):
        s = make_splits(cat, "zero_shot", folds=4, fold=k)
        train, val = set(s.train.labels.tolist()), set(s.val.query.labels.tolist())
        assert not train & val and train | val == first
        assert len(val) == 2 and set(s.test.query.labels.tolist()) == second
        assert (s.val.query.split == "train").all() and (s.train.split == "train").all()
        assert (s.test.query.split == "test").all() and s.val.reference is None
        vals.append(sorted(val))
    assert vals == [sorted(classes[2 * i:2 * i + 2].tolist()) for i in range(4)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"protocol": "closed_set", "folds": 2, "fold": 0}, "zero_shot"),
    ({"folds": 2, "fold": 0, "val_fraction": 0.2}, "val_fraction"),
    ({"folds": 2}, "needs data.fold"),
    ({"fold": 1}, "needs data.folds"),
    ({"folds": 5, "fold": 0}, "at least 10"),
])
def test_make_splits_fold_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        make_splits(catalog(), **kwargs)


def test_config_folds_reach_the_data(tmp_path):
    cfg = config.load("digits-smoke", ["data.val_fraction=0", "data.folds=2", "data.fold=1"])
    data = build_data(cfg.data)
    assert set(data.val.query.catalog.labels.tolist()) == {3, 4}
    assert set(data.splits.train.labels.tolist()) == {0, 1, 2}
    assert set(data.test.query.catalog.labels.tolist()) == {5, 6, 7, 8, 9}
