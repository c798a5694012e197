import numpy as np
import pytest

from dmlkit.data.holdout import random_holdout
from dmlkit.errors import DataError


@pytest.mark.parametrize("n", [50_000, 60_000, 1_234, 9, 1])
def test_sizes_are_the_official_random_split(n):
    # official MyModel_*.py: val_size = int(len(train_ds) * 0.10); train_size = len - val_size
    val_size = int(n * 0.10)
    kept, held = random_holdout(n, 0.1, seed=3)
    assert (len(kept), len(held)) == (n - val_size, val_size)
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(n))
    assert np.array_equal(kept, np.sort(kept))


def test_a_pure_function_of_the_seed():
    a, b = random_holdout(1000, 0.1, seed=7), random_holdout(1000, 0.1, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    other = random_holdout(1000, 0.1, seed=8)[1]
    assert not np.array_equal(np.sort(a[1]), np.sort(other))
    # random, not a block: the held-out images spread over the whole index range
    assert a[1].min() < 200 and a[1].max() > 800


def test_zero_fraction_keeps_everything_and_bad_fractions_fail():
    kept, held = random_holdout(5, 0.0)
    assert kept.tolist() == [0, 1, 2, 3, 4] and held.size == 0
    with pytest.raises(DataError, match=r"\[0, 1\)"):
        random_holdout(5, 1.0)
