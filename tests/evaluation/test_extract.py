"""Extraction of a batched in-memory dataset (no DataLoader) equals the per-sample path."""

import numpy as np
import torch
from torch.utils.data import Subset

from dmlkit.data.catalog import Catalog
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.transforms import build_batch_transform, build_transform
from dmlkit.evaluation.extract import extract_embeddings, extract_sharded


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


def test_embeddings_come_back_on_out_device():
    """Default: the CPU (existing callers); ``out_device``: one copy there at the end (the
    meta device stands in for an accelerator)."""
    cat = Catalog(name="toy", labels=np.arange(10) % 2, split=np.full(10, "test"),
                  images=np.zeros((10, 8, 8, 1), dtype=np.uint8))
    ds = ImageDataset(cat, build_transform("small", False, 8, 1),
                      build_batch_transform("small", False, 8, 1))
    model = torch.nn.Flatten()
    emb, labels = extract_embeddings(model, ds, batch_size=4)
    assert (emb.device.type, labels.device.type, emb.shape) == ("cpu", "cpu", (10, 64))
    emb, labels = extract_embeddings(model, ds, batch_size=4, out_device="meta")
    assert (emb.device.type, labels.device.type, emb.dtype) == ("meta", "meta", torch.float32)
    emb, labels = extract_sharded(model, ds, batch_size=4, out_device="meta")
    assert emb.device.type == "meta" and emb.shape == (10, 64)
