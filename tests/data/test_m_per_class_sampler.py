import numpy as np
import pytest

from dmlkit.data.m_per_class_sampler import MPerClassBatchSampler
from dmlkit.errors import ConfigError, DataError

LABELS = np.repeat(np.arange(10), [3, 8, 8, 8, 8, 8, 8, 8, 8, 8])


def test_batches_hold_m_images_of_distinct_classes():
    s = MPerClassBatchSampler(LABELS, batch_size=16, m=4, seed=1)
    assert len(s) == len(LABELS) // 16
    for batch in s:
        y = LABELS[batch]
        assert len(batch) == 16
        classes, counts = np.unique(y, return_counts=True)
        assert len(classes) == 4 and (counts == 4).all()
        for c in classes:  # without replacement when the class is large enough
            idx = [i for i in batch if LABELS[i] == c]
            assert len(set(idx)) == (4 if c != 0 else len(set(idx)))


def test_stream_is_a_function_of_seed_and_epoch():
    a = MPerClassBatchSampler(LABELS, batch_size=16, m=4, batches_per_epoch=5, seed=3)
    b = MPerClassBatchSampler(LABELS, batch_size=16, m=4, batches_per_epoch=5, seed=3)
    b.set_epoch(1)
    first = list(a)
    a.set_epoch(1)
    assert list(a) == list(b) and first != list(b)


def test_ranks_split_the_global_batch():
    full = list(MPerClassBatchSampler(LABELS, batch_size=16, m=4, batches_per_epoch=3, seed=0))
    parts = [list(MPerClassBatchSampler(LABELS, batch_size=16, m=4, batches_per_epoch=3, seed=0,
                                        rank=r, world_size=2))
             for r in range(2)]
    assert [p0 + p1 for p0, p1 in zip(*parts, strict=True)] == full


def test_errors():
    with pytest.raises(ConfigError, match="multiple"):
        MPerClassBatchSampler(LABELS, batch_size=10, m=4)
    with pytest.raises(DataError, match="needs 8 classes"):
        MPerClassBatchSampler(np.repeat(np.arange(3), 5), batch_size=16, m=2)


# ------------------------------------------------ small_classes="all": MDR's official sampler
# Official rule (kakaoenterprise/AAAI2021_MDR, metric/batchsampler.py), restated: go through
# all classes in a random order; from each take min(m, n) of its n images without replacement;
# stop once the batch holds at least batch_size images and cut it to batch_size.
SMALL = np.repeat(np.arange(8), [1, 2, 1, 2, 5, 6, 2, 4])  # 1- and 2-image classes


def official_counts(order: list[int], sizes: dict[int, int], m: int, batch_size: int) -> list:
    """Images per class of the official batch that visits classes in ``order``."""
    counts, total = [], 0
    for c in order:
        counts.append(min(m, sizes[c]))
        total += counts[-1]
        if total >= batch_size:
            break
    counts[-1] -= max(0, total - batch_size)
    return counts


def class_runs(y: np.ndarray) -> tuple[list[int], list[int]]:
    """The batch's classes in order of appearance and their run lengths (contiguous)."""
    starts = np.flatnonzero(np.r_[True, y[1:] != y[:-1]])
    return y[starts].tolist(), np.diff(np.r_[starts, len(y)]).tolist()


@pytest.mark.parametrize(("m", "batch_size"), [(3, 8), (2, 7), (4, 10)])
def test_all_rule_matches_the_official_rule(m, batch_size):
    sizes = dict(zip(*np.unique(SMALL, return_counts=True), strict=True))
    s = MPerClassBatchSampler(SMALL, batch_size=batch_size, m=m, batches_per_epoch=300, seed=2,
                              small_classes="all")
    seen = np.zeros(8, int)
    for batch in s:
        y = SMALL[batch]
        order, runs = class_runs(y)
        assert len(batch) == batch_size and len(set(batch)) == batch_size  # no repeat
        assert len(set(order)) == len(order)  # each class once, its images together
        assert runs == official_counts(order, sizes, m, batch_size)
        seen[order] += 1
    assert (seen > 0).all()  # single-image classes are drawn too
    assert s.skipped_classes.size == 0


def test_all_rule_batch_256_of_3_is_85_classes_and_one_image():
    labels = np.repeat(np.arange(120), 3)
    s = MPerClassBatchSampler(labels, batch_size=256, m=3, batches_per_epoch=2, seed=0,
                              small_classes="all")
    for batch in s:
        _, runs = class_runs(labels[batch])
        assert runs == [3] * 85 + [1]


def test_replace_rule_is_unchanged_and_needs_a_multiple_of_m():
    s = MPerClassBatchSampler(SMALL, batch_size=6, m=3, batches_per_epoch=50, seed=0)
    assert s.skipped_classes.tolist() == [0, 2]
    drawn = set(np.concatenate([SMALL[b] for b in s]).tolist())
    assert drawn.isdisjoint({0, 2})
    for batch in s:  # 2-image classes give 3 images, with replacement
        assert np.unique(SMALL[batch], return_counts=True)[1].tolist() == [3, 3]
    with pytest.raises(ConfigError, match="7 is not a multiple of m_per_class 3"):
        MPerClassBatchSampler(SMALL, batch_size=7, m=3)
    with pytest.raises(ConfigError, match="replace or all"):
        MPerClassBatchSampler(SMALL, batch_size=6, m=3, small_classes="some")
    with pytest.raises(DataError, match="training set has 23"):
        MPerClassBatchSampler(SMALL, batch_size=24, m=3, small_classes="all")


def test_all_rule_stream_is_seeded_and_split_across_ranks():
    def make(**kw):
        return MPerClassBatchSampler(SMALL, batch_size=8, m=3, batches_per_epoch=4, seed=1,
                                     small_classes="all", **kw)
    full = list(make())
    assert full == list(make())
    parts = [list(make(rank=r, world_size=2)) for r in range(2)]
    assert [p0 + p1 for p0, p1 in zip(*parts, strict=True)] == full



def test_pml_style_keywords_work_and_positional_order_cannot_swap():
    """PML writes MPerClassSampler(labels, m, batch_size=...): keywords only, no silent swap."""
    s = MPerClassBatchSampler(LABELS, m=4, batch_size=16)
    assert (s.m, s.batch_size) == (4, 16)
    with pytest.raises(TypeError):
        MPerClassBatchSampler(LABELS, 4, 16)  # type: ignore[misc]
