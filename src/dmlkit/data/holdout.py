"""`random_holdout`: a random fraction of a set's indices held out, as torch's ``random_split``.

Guided DML's official student (``MyModel_*.py``) trains on ``random_split(data, [n - v, v])``
with ``v = int(0.1 n)`` and reports the loss on the held-out ``v`` samples each epoch. Here the
permutation is a pure function of ``(seed, n)``, so a run and its resume agree.
"""

from __future__ import annotations

import numpy as np

from dmlkit.errors import DataError


def random_holdout(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) indices of ``range(n)``: ``int(fraction * n)`` held out at random.

    ``kept`` is sorted; ``held_out`` is in permutation order (the order the official
    validation loader reads them). ``fraction=0`` keeps everything.

    >>> kept, held = random_holdout(10, 0.1, seed=0)
    >>> len(kept), len(held), sorted([*kept, *held]) == list(range(10))
    (9, 1, True)
    """
    if not 0 <= fraction < 1:
        raise DataError(f"a held-out fraction must be in [0, 1), got {fraction}")
    held = int(fraction * n)  # < n since fraction < 1
    order = np.random.default_rng([seed, n]).permutation(n)
    return np.sort(order[: n - held]), order[n - held :]
