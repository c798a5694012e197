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


def test_pml_style_keywords_work_and_positional_order_cannot_swap():
    """PML writes MPerClassSampler(labels, m, batch_size=...): keywords only, no silent swap."""
    s = MPerClassBatchSampler(LABELS, m=4, batch_size=16)
    assert (s.m, s.batch_size) == (4, 16)
    with pytest.raises(TypeError):
        MPerClassBatchSampler(LABELS, 4, 16)  # type: ignore[misc]
