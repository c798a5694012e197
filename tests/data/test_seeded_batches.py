"""Position-seeded augmentation of the per-sample path: the same batches for any number of
DataLoader workers, persistent or not, after a mid-epoch restart, on any number of ranks."""

import pytest
import torch
from torch.utils.data import DataLoader

from data.fixtures import make_folder
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.device_batches import batch_seed, batch_seeds
from dmlkit.data.m_per_class_sampler import MPerClassBatchSampler
from dmlkit.data.registry import load_catalog
from dmlkit.data.seeded_batches import SeededBatches
from dmlkit.data.transforms import build_transform


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("img"), classes=tuple("abcdef"), per_class=4,
                       size=(40, 30))
    catalog = load_catalog("folder", root)
    return ImageDataset(catalog, build_transform("small_aug", True, 16))


def sampler(dataset, rank=0, world=1):
    return MPerClassBatchSampler(dataset.labels.numpy(), batch_size=8, m=2, batches_per_epoch=3,
                                 seed=5, rank=rank, world_size=world)


def epochs(dataset, workers, persistent, start=(0, 0), last=1):
    """Every batch from (epoch, batch) ``start`` to the end of epoch ``last``, one loader."""
    s = sampler(dataset)
    loader = DataLoader(dataset, batch_sampler=SeededBatches(s, 7, 1), num_workers=workers,
                        persistent_workers=persistent, generator=torch.Generator())
    out = []
    for e in range(start[0], last + 1):
        s.set_epoch(e, start[1] if e == start[0] else 0)
        out += list(loader)
    return out


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b, strict=True)
                                    for x, y in zip(p, q, strict=True))


def test_batches_do_not_depend_on_workers_persistence_or_restarts(dataset):
    reference = epochs(dataset, 0, False)
    assert len(reference) == 6 and reference[0][0].shape == (8, 3, 16, 16)
    assert same(epochs(dataset, 1, False), reference)
    assert same(epochs(dataset, 2, True), reference)
    assert same(epochs(dataset, 2, False, start=(1, 1)), reference[4:])  # resumed mid-epoch


def test_a_seed_fixes_the_draws_and_leaves_the_global_rng(dataset):
    before = torch.get_rng_state()
    a, b, c = dataset[(3, 11)][0], dataset[(3, 11)][0], dataset[(3, 12)][0]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, b) and not torch.equal(a, c)  # crop offset or flip differ
    plain = ImageDataset(dataset.catalog, build_transform("small", True, 16))
    assert torch.equal(plain[(3, 11)][0], plain[3][0])  # no random op: the seed changes nothing


def test_seeds_follow_the_global_position_across_ranks(dataset):
    one = SeededBatches(sampler(dataset), 7, 1)
    halves = [SeededBatches(sampler(dataset, r, 2), 7, 1) for r in (0, 1)]
    whole = list(one)
    split = [a + b for a, b in zip(*map(list, halves), strict=True)]
    assert split == whole
    assert [s for _, s in whole[2]] == batch_seeds(7, 1, 0, 2, 8)
    assert batch_seeds(7, 1, 0, 2, 8)[0] == batch_seed(7, 1, 0, 2)  # a prefix of one sequence
