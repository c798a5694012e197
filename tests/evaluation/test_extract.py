"""Extraction of a batched in-memory dataset (no DataLoader) equals the per-sample path."""

import numpy as np
import torch
from torch.utils.data import Subset

from dmlkit.data.catalog import Catalog
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.transforms import build_batch_transform, build_transform
from dmlkit.evaluation.extract import extract_embeddings


def test_batched_extraction_equals_the_per_sample_path():
    rng = np.random.default_rng(0)
    cat = Catalog(name="toy", labels=np.arange(37) % 5, split=np.full(37, "test"),
                  images=rng.integers(0, 256, (37, 12, 12, 3), dtype=np.uint8))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    per_sample = ImageDataset(cat, build_transform("cifar", False, 10, 3))
    batched = ImageDataset(cat, per_sample.transform, build_batch_transform("cifar", False, 10, 3))
    assert batched.batched and not per_sample.batched
    for a, b in [(per_sample, batched), (Subset(per_sample, range(3, 30)),
                                         Subset(batched, range(3, 30)))]:
        want, want_y = extract_embeddings(model, a, batch_size=8)
        got, got_y = extract_embeddings(model, b, batch_size=8)
        assert torch.equal(got_y, want_y) and torch.equal(got, want)
