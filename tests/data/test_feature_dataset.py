import numpy as np
import pytest
import torch

from dmlkit.data.catalog import Catalog
from dmlkit.data.feature_dataset import FeatureDataset
from dmlkit.errors import DataError


def catalog(n: int) -> Catalog:
    return Catalog(name="toy", labels=np.arange(n) % 3, split=np.array(["train"] * n),
                   images=np.zeros((n, 2, 2, 1), np.uint8))


def test_samples_are_feature_rows_with_label_and_index():
    features = torch.randn(5, 4)
    ds = FeatureDataset(catalog(5), features)
    x, y, i = ds[3]
    assert len(ds) == 5 and torch.equal(x, features[3]) and int(y) == 0 and i == 3
    assert not ds.batched and ds.transform is None


def test_row_count_must_match_the_catalog():
    with pytest.raises(DataError, match="4 cached feature rows for 5 images"):
        FeatureDataset(catalog(5), torch.zeros(4, 2))
