import numpy as np
import pytest
from torch.utils.data import DataLoader

from dmlkit.data.random_batch_sampler import RandomBatchSampler
from dmlkit.errors import ConfigError, DataError


def _epoch(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize(("n", "batch"), [(45_000, 32), (54_000, 128), (54_000, 32), (10, 4)])
def test_kept_partial_batch_is_the_official_loader(n, batch):
    # official student: DataLoader(train_ds, batch_size, shuffle=True), drop_last=False
    official = [len(b) for b in DataLoader(range(n), batch_size=batch, shuffle=True)]
    batches = _epoch(RandomBatchSampler(n, batch, seed=1, drop_last=False))
    assert [len(b) for b in batches] == official
    assert sorted(i for b in batches for i in b) == list(range(n))
    dropped = _epoch(RandomBatchSampler(n, batch, seed=1))
    assert [len(b) for b in dropped] == [batch] * (n // batch)
    # the same permutation: dropping only removes the tail
    assert [i for b in dropped for i in b] == [i for b in batches for i in b][: n // batch * batch]


def test_default_stream_is_unchanged():
    # epoch e is permutation(default_rng([seed, e])) cut into full batches (the old stream)
    order = np.random.default_rng([4, 2]).permutation(50)
    assert _epoch(RandomBatchSampler(50, 8, seed=4), 2) == [
        order[b * 8 : (b + 1) * 8].tolist() for b in range(6)]


def test_indices_restrict_the_draw():
    kept = np.array([3, 5, 8, 13, 21, 34, 55])
    batches = _epoch(RandomBatchSampler(60, 3, seed=0, indices=kept, drop_last=False))
    assert sorted(i for b in batches for i in b) == kept.tolist()
    assert [len(b) for b in batches] == [3, 3, 1]
    with pytest.raises(DataError, match="fewer than one batch"):
        RandomBatchSampler(60, 8, indices=kept)
    assert len(RandomBatchSampler(60, 8, indices=kept, drop_last=False)) == 1
    assert len(RandomBatchSampler(60, 2, batches_per_epoch=2, indices=kept,
                                  drop_last=False)) == 2


def test_kept_partial_batch_must_split_over_ranks():
    sampler = RandomBatchSampler(10, 4, drop_last=False)  # last batch: 2 samples
    sampler.shard(1, 2)
    batches = _epoch(sampler)
    assert [len(b) for b in batches] == [2, 2, 1]
    full = _epoch(RandomBatchSampler(10, 4, drop_last=False))
    assert [b[len(b) // 2:] for b in full] == batches
    with pytest.raises(ConfigError, match="does not split over 4 ranks"):
        RandomBatchSampler(10, 4, drop_last=False).shard(0, 4)
