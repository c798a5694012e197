"""`DeviceBatches`: batches built on the device, a pure function of (seed, stream, epoch, batch)."""

import numpy as np
import torch

from dmlkit.data.catalog import Catalog
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.device_batches import DeviceBatches
from dmlkit.data.m_per_class_sampler import MPerClassBatchSampler
from dmlkit.data.transforms import build_batch_transform, build_transform


def dataset(train=True):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 10)
    cat = Catalog(name="toy", labels=labels, split=np.full(60, "train"),
                  images=rng.integers(0, 256, (60, 10, 10, 1), dtype=np.uint8))
    return ImageDataset(cat, build_transform("small_aug", train, 8, 1),
                        build_batch_transform("small_aug", train, 8, 1))


def draw(ds, epoch, start=0, rank=0, world=1, seed=7, stream=0):
    sampler = MPerClassBatchSampler(ds.labels.numpy(), batch_size=8, m=2, batches_per_epoch=6,
                                    seed=1, rank=rank, world_size=world)
    sampler.set_epoch(epoch, start)
    return list(DeviceBatches(ds, sampler, torch.device("cpu"), seed, stream))


def test_batches_hold_the_sampled_images_transformed():
    ds = dataset(train=False)
    for images, labels, index in draw(ds, 0):
        assert images.shape == (8, 1, 8, 8) and images.dtype == torch.float32
        assert torch.equal(labels, ds.labels[index])
        assert torch.equal(images, torch.stack([ds[int(i)][0] for i in index]))


def test_a_resumed_epoch_repeats_the_draws():
    ds = dataset()
    full = draw(ds, 2)
    for a, b in zip(full[3:], draw(ds, 2, start=3), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert torch.equal(draw(ds, 2)[0][0], full[0][0])


def test_positions_and_streams_draw_differently():
    ds = dataset()
    base = draw(ds, 0)[0][0]
    assert not torch.equal(draw(ds, 0, stream=1)[0][0], base)
    assert not torch.equal(draw(ds, 0, seed=8)[0][0], base)


def test_ranks_get_the_slices_of_one_process_batches():
    ds = dataset()
    whole = draw(ds, 1)
    ranks = [draw(ds, 1, rank=r, world=2) for r in range(2)]
    for b, (images, _, index) in enumerate(whole):
        assert torch.equal(torch.cat([ranks[r][b][0] for r in range(2)]), images)
        assert torch.equal(torch.cat([ranks[r][b][2] for r in range(2)]), index)
