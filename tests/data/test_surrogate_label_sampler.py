import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dmlkit.data.surrogate_label_sampler import SurrogateLabelBatchSampler
from dmlkit.errors import CheckpointError, ConfigError


def epoch_stream(sampler, epoch):
    sampler.set_epoch(epoch)
    batches = list(sampler)
    labels = [sampler.surrogate_labels(b) for b in range(len(batches))]
    return batches, labels


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last", "expected_len"),
    [(50, 8, True, 6), (50, 8, False, 7), (48, 8, True, 6), (48, 8, False, 6), (8, 8, False, 1)],
)
def test_every_batch_is_full(n, batch_size, drop_last, expected_len):
    sampler = SurrogateLabelBatchSampler(n, batch_size, m=2, seed=1, drop_last=drop_last)
    batches, labels = epoch_stream(sampler, 0)
    assert len(sampler) == len(batches) == expected_len
    for batch, lab in zip(batches, labels, strict=True):
        assert len(batch) == batch_size and len(set(batch)) == batch_size
        assert all(0 <= i < n for i in batch)
        assert lab.shape == (batch_size,) and lab.dtype == torch.int64


def test_drop_last_index_coverage():
    n, batch_size = 50, 8

    def indices(drop_last):
        sampler = SurrogateLabelBatchSampler(n, batch_size, drop_last=drop_last)
        return [i for b in epoch_stream(sampler, 3)[0] for i in b]

    dropped = indices(drop_last=True)
    assert len(dropped) == len(set(dropped)) == 48  # no index twice; n % batch_size unseen
    kept = indices(drop_last=False)
    counts = np.bincount(kept, minlength=n)
    assert counts.min() == 1 and counts.sum() == 56 and (counts == 2).sum() == 6  # top-up of 6


def test_block_structure_and_label_chain():
    m, labels_count = 4, 7
    sampler = SurrogateLabelBatchSampler(400, 24, m=m, num_surrogate_labels=labels_count, seed=5)
    _, labels = epoch_stream(sampler, 2)
    blocks = torch.cat(labels).view(-1, m)
    assert (blocks == blocks[:, :1]).all()  # each block of m shares one label
    chain = blocks[:, 0].tolist()  # checked across batch boundaries too
    for k in range(1, len(chain)):
        assert chain[k] not in chain[max(0, k - 2) : k]
    assert set(chain) == set(range(labels_count))  # 64 blocks over 7 labels: all appear


def test_three_labels_force_a_cycle():
    sampler = SurrogateLabelBatchSampler(60, 6, m=2, num_surrogate_labels=3, seed=0)
    chain = torch.cat(epoch_stream(sampler, 0)[1])[::2].tolist()
    assert all(chain[k] == chain[k % 3] for k in range(len(chain)))
    assert sorted(chain[:3]) == [0, 1, 2]


def test_label_chain_continues_across_epochs():
    """Official RandomizedDataset_wLabel keeps one label chain through all epochs: with 3 labels
    every block's label is forced by the two before it, across epoch boundaries too."""
    sampler = SurrogateLabelBatchSampler(60, 6, m=2, num_surrogate_labels=3, seed=0)
    chain = torch.cat([torch.cat(epoch_stream(sampler, e)[1])[::2] for e in range(4)]).tolist()
    assert len(chain) == 4 * 30
    assert all(chain[k] == chain[k % 3] for k in range(len(chain)))


def test_continued_chain_is_a_pure_function_of_seed_and_epoch():
    """A sampler set straight to epoch e (a resume) draws what one run through 0..e draws."""
    def labels(sampler, epoch):
        return torch.cat(epoch_stream(sampler, epoch)[1]).tolist()

    run_through = SurrogateLabelBatchSampler(100, 20, m=4, num_surrogate_labels=196, seed=4)
    stream = [labels(run_through, e) for e in range(6)]
    for e in range(1, 6):  # across each boundary: the new epoch's first block avoids the last two
        assert stream[e][0] not in (stream[e - 1][-1], stream[e - 1][-5])
    jumped = SurrogateLabelBatchSampler(100, 20, m=4, num_surrogate_labels=196, seed=4)
    assert labels(jumped, 5) == stream[5]
    assert labels(jumped, 3) == stream[3]  # going back after a jump


def test_labels_roughly_uniform():
    sampler = SurrogateLabelBatchSampler(40_000, 100, m=4, num_surrogate_labels=10, seed=0)
    chain = torch.cat(epoch_stream(sampler, 0)[1])[::4]
    freq = torch.bincount(chain, minlength=10).double() / len(chain)
    assert (freq - 0.1).abs().max() < 0.01  # 10k blocks: std of each frequency ~0.003


def test_default_sizes():
    sampler = SurrogateLabelBatchSampler(1000, 112)
    assert (sampler.m, sampler.num_surrogate_labels) == (4, 196)
    labels = torch.cat(epoch_stream(sampler, 0)[1])
    assert labels.min() >= 0 and labels.max() <= 195


def test_determinism_across_instances_epochs_and_seeds():
    def stream(seed, epoch):
        batches, labels = epoch_stream(SurrogateLabelBatchSampler(100, 20, seed=seed), epoch)
        return batches, [lab.tolist() for lab in labels]

    assert stream(0, 4) == stream(0, 4)
    assert stream(0, 4)[0] != stream(0, 5)[0] and stream(0, 4)[1] != stream(0, 5)[1]
    assert stream(0, 4)[0] != stream(1, 4)[0] and stream(0, 4)[1] != stream(1, 4)[1]


def test_reiterating_without_set_epoch_repeats_the_epoch():
    sampler = SurrogateLabelBatchSampler(100, 20, seed=3)
    assert list(sampler) == list(sampler)


def test_labels_do_not_depend_on_iterator_progress():
    sampler = SurrogateLabelBatchSampler(100, 20, seed=3)
    sampler.set_epoch(1)
    before = [sampler.surrogate_labels(b) for b in range(len(sampler))]
    list(sampler)  # a pre-fetching loader exhausts the iterator early
    after = [sampler.surrogate_labels(b) for b in range(len(sampler))]
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))
    with pytest.raises(IndexError):
        sampler.surrogate_labels(len(sampler))


def test_state_round_trip_mid_epoch():
    original = SurrogateLabelBatchSampler(100, 12, m=3, seed=9)
    full, labels = epoch_stream(original, 2)
    it = iter(original)
    head = [next(it), next(it)]
    state = original.state_dict()
    assert (state["epoch"], state["start_batch"]) == (2, 2)

    resumed = SurrogateLabelBatchSampler(100, 12, m=3, seed=9)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert head + rest == full
    assert all(torch.equal(resumed.surrogate_labels(b), labels[b]) for b in range(len(full)))
    assert list(resumed) == full  # the partial resume applies once; then whole epochs again


def test_set_epoch_start_batch_resumes():
    sampler = SurrogateLabelBatchSampler(100, 10, m=2, seed=2)
    full, _ = epoch_stream(sampler, 6)
    sampler.set_epoch(6, start_batch=7)
    assert list(sampler) == full[7:]
    with pytest.raises(ConfigError, match=r"start_batch"):
        sampler.set_epoch(6, start_batch=11)


def test_load_state_rejects_other_config():
    state = SurrogateLabelBatchSampler(100, 12, m=3, seed=9).state_dict()
    with pytest.raises(CheckpointError, match=r"batch_size: saved 12, now 24"):
        SurrogateLabelBatchSampler(100, 24, m=3, seed=9).load_state_dict(state)


def test_works_as_dataloader_batch_sampler():
    data = TensorDataset(torch.arange(30) * 10)
    sampler = SurrogateLabelBatchSampler(30, 6, m=2, seed=4)
    sampler.set_epoch(1)
    expected = list(sampler)
    got = [batch.tolist() for (batch,) in DataLoader(data, batch_sampler=sampler)]
    assert got == [[10 * i for i in b] for b in expected]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 2, "m": 4}, "smaller than one surrogate-label block"),
        ({"batch_size": 10, "m": 4},
         "not a multiple of the block size m=4 .*: use e.g. batch_size 8 or 12"),
        ({"batch_size": 8, "m": 1}, "set m >= 2"),
        ({"batch_size": 8, "num_surrogate_labels": 2}, "need >= 3"),
        ({"batch_size": 64}, "fewer than one batch of 64: lower batch_size"),
        ({"batch_size": 8, "seed": -1}, "seed must be >= 0"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SurrogateLabelBatchSampler(50, **kwargs)
