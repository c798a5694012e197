import numpy as np
import pytest

from dmlkit.data.registry import load_catalog
from dmlkit.errors import DataError


def test_balanced_seeded_random_images():
    a = load_catalog("synthetic", classes=3, per_class=4, size=5, channels=3)
    assert a.images.shape == (12, 5, 5, 3) and a.images.dtype == np.uint8
    assert np.bincount(a.labels).tolist() == [4, 4, 4]
    assert (a.split == "test").sum() == 3  # one of four per class
    assert np.array_equal(load_catalog("synthetic", classes=3, per_class=4, size=5).images,
                          a.images)
    assert a.images.std() > 50  # uniform on 0..255 (std 74)


def test_bad_sizes_are_refused():
    with pytest.raises(DataError, match="synthetic"):
        load_catalog("synthetic", classes=1)
