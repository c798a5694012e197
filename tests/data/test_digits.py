import numpy as np

from dmlkit.data.digits import load_digits
from dmlkit.data.layout import stratified_split
from dmlkit.data.registry import load_catalog


def test_digits_catalog():
    cat = load_catalog("digits")
    assert cat.images.shape == (1797, 8, 8, 1) and cat.images.dtype == np.uint8
    assert cat.images.min() == 0 and cat.images.max() == 255
    assert len(cat.classes) == 10


def test_split_is_stratified_and_seeded():
    cat = load_digits(test_fraction=0.25, seed=3)
    for c in cat.classes:
        n = (cat.labels == c).sum()
        assert (cat.split[cat.labels == c] == "test").sum() == round(0.25 * n)
    np.testing.assert_array_equal(load_digits(seed=3).split, cat.split)
    assert (load_digits(seed=4).split != cat.split).any()
    # layout.stratified_split draws the same split (a drop-in for digits.py's loop)
    np.testing.assert_array_equal(stratified_split(cat.labels, 0.25, 3), cat.split)
