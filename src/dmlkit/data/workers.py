"""How many DataLoader worker processes a dataset gets (``data.num_workers``), their prefetch,
and their errors as one line.

Workers pay off where each sample costs real CPU time (decoding and transforming image files):
``auto`` gives such a dataset every core but one (the training process's) of this process's
share of the machine (docs/input-pipeline.md); for in-memory datasets their start-up costs more
than it saves, so ``auto`` gives them none.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from torch.utils.data import Dataset, Subset

from dmlkit.errors import DmlkitError

T = TypeVar("T")


def resolve_workers(setting: int | str, on_disk: bool, cores: int, ranks: int = 1) -> int:
    """``data.num_workers`` as a number: an int stays; ``auto`` is, for an on-disk dataset, this
    process's share of the ``cores`` (``ranks`` training processes on the machine) less one for
    the process itself, at least 1; 0 for an in-memory one.

    >>> resolve_workers("auto", True, 16), resolve_workers("auto", True, 16, ranks=2)
    (15, 7)
    >>> resolve_workers("auto", True, 2), resolve_workers("auto", True, 1)
    (1, 1)
    >>> resolve_workers("auto", False, 16), resolve_workers(3, False, 16)
    (0, 3)
    """
    if setting != "auto":
        return int(setting)
    return max(1, cores // max(ranks, 1) - 1) if on_disk else 0


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def local_ranks() -> int:
    """Training processes sharing this machine (torchrun's ``LOCAL_WORLD_SIZE``; else 1)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def on_disk(dataset: Dataset) -> bool:
    """Whether ``dataset`` (or the dataset under a Subset) reads image files."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return bool(getattr(dataset, "on_disk", False))


def loader_workers(setting: int | str, dataset: Dataset) -> int:
    """`resolve_workers` for ``dataset`` on this machine."""
    return resolve_workers(setting, on_disk(dataset), available_cores(), local_ranks())


def prefetch_factor(workers: int) -> int | None:
    """Batches each worker loads ahead: at least 4 in flight in all (None without workers).

    >>> [prefetch_factor(n) for n in (0, 1, 2, 8)]
    [None, 4, 2, 2]
    """
    return None if workers == 0 else max(2, -(-4 // workers))


def worker_error(error: DmlkitError) -> DmlkitError:
    """``error`` with its own one-line message: one raised in a DataLoader worker comes back
    with the worker's traceback prepended by torch (others are returned as they are)."""
    lines = str(error).strip().splitlines()
    if len(lines) > 1 and "DataLoader worker" in lines[0]:
        return type(error)(lines[-1].split(": ", 1)[-1])
    return error


def one_line_errors(batches: Iterable[T]) -> Iterator[T]:
    """``batches`` (a DataLoader's), raising a worker's DmlkitError as `worker_error` does."""
    try:
        yield from batches
    except DmlkitError as e:
        raise worker_error(e) from None
