import numpy as np
import pytest

from dmlkit.data.catalog import Catalog
from dmlkit.data.splits import make_splits
from dmlkit.errors import DataError


def catalog(n_per=6, classes=(0, 1, 2, 3, 4, 5), query=False):
    labels = np.repeat(np.array(classes), n_per)
    split = np.tile(np.array(["train"] * (n_per // 2) + ["test"] * (n_per - n_per // 2)),
                    len(classes))
    images = np.zeros((len(labels), 4, 4, 1), np.uint8)
    extra = {}
    if query:
        extra = {"is_query": np.arange(len(labels)) % 2 == 0,
                 "is_gallery": np.arange(len(labels)) % 2 == 1}
    return Catalog("t", labels, split, images=images, **extra)


def test_zero_shot_is_class_disjoint_and_uses_official_images():
    s = make_splits(catalog(), "zero_shot")
    assert set(s.train.labels) == {0, 1, 2} and set(s.test.query.labels) == {3, 4, 5}
    assert (s.train.split == "train").all() and (s.test.query.split == "test").all()
    assert s.test.reference is None


def test_zero_shot_all_images_and_explicit_classes():
    s = make_splits(catalog(), "zero_shot", train_classes=[0, 2, 4], all_images=True)
    assert set(s.train.labels) == {0, 2, 4} and len(s.train) == 18
    assert set(s.test.query.labels) == {1, 3, 5} and len(s.test.query) == 18


def test_closed_set_uses_train_as_reference():
    s = make_splits(catalog(), "closed_set")
    assert (s.test.query.split == "test").all()
    assert s.test.reference is s.train
    assert set(s.test.query.labels) == set(s.train.labels)


def test_official_query_gallery():
    s = make_splits(catalog(query=True), "official")
    assert s.test.query.is_query.all() and s.test.reference.is_gallery.all()


def test_validation_classes_are_held_out():
    s = make_splits(catalog(classes=tuple(range(10))), "zero_shot", val_fraction=0.4)
    assert set(s.val.query.labels) == {3, 4}
    assert set(s.train.labels) == {0, 1, 2}


def test_max_per_class_caps_training_images_of_each_class_in_each_split_never_test():
    s = make_splits(catalog(n_per=10), "zero_shot", all_images=True, max_per_class=4)
    for part in ("train", "test"):
        counts = np.bincount(s.train.labels[s.train.split == part])
        assert counts[counts > 0].tolist() == [4, 4, 4]
    assert len(s.test.query) == 30  # every image of the 3 test classes
    closed = make_splits(catalog(n_per=10), "closed_set", max_per_class=2)
    assert len(closed.train) == 12 and len(closed.test.query) == 30
    other_seed = make_splits(catalog(n_per=10), "zero_shot", max_per_class=4, seed=1)
    assert len(other_seed.test.query) == 15  # the test set does not move with the seed


def test_errors():
    with pytest.raises(DataError, match="not in the dataset"):
        make_splits(catalog(), "zero_shot", train_classes=[99])
    with pytest.raises(DataError, match="both sides"):
        make_splits(catalog(), "zero_shot", train_classes=[0, 1, 2, 3, 4, 5])
    with pytest.raises(DataError, match="leaves no training class"):
        make_splits(catalog(classes=(0, 1, 2, 3)), "zero_shot", val_fraction=0.9)
