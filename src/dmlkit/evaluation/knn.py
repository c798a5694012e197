"""Exact k-nearest-neighbour ranking, streamed in query chunks (memory O(chunk x N), never N x N).

Ranking. For a query q and reference items r_j the score s_j is the squared L2 distance up to a
per-query constant, ``||r_j||^2 - 2 q.r_j`` (``"euclidean"``), or the negated inner product
``-q.r_j`` (``"dot"``; ``"cosine"`` first L2-normalizes both sides). Both are computed by one
float32 matrix product. Neighbours are ordered by increasing score; among *equal* scores the lower
reference index ranks first. The order is exact: the k smallest keys ``(s_j, j)`` are selected,
including at the k-th position, so the result does not depend on the selection algorithm.

Self-exclusion is by index: ``exclude[i]`` names one reference column that query i never
retrieves (compared-to-self mode), whatever its distance; duplicates of the query stay.

On CPU the selection runs in numpy (a value partition finds the k-th smallest score, then the
candidates at or below it are sorted by the composite key), with chunks processed in parallel
threads; on CUDA it is one ``topk`` over composite int64 keys.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from dmlkit.errors import ConfigError

DISTANCES = ("euclidean", "cosine", "dot")
DEFAULT_MEMORY_BUDGET_MB = 512
_INDEX_BITS = 32
_INDEX_MASK = (1 << _INDEX_BITS) - 1

T = TypeVar("T")


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, ``x / max(||x||, 1e-12)`` (as ``F.normalize``)."""
    return F.normalize(x, p=2, dim=1)


def _augment(
    query: torch.Tensor, reference: torch.Tensor, distance: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Operands whose product is the score matrix: ``[-2q, 1] . [r, ||r||^2]`` or ``-q . r``."""
    if distance not in DISTANCES:
        raise ConfigError(f"unknown distance {distance!r}; choose one of {', '.join(DISTANCES)}")
    if distance == "cosine":
        query, reference = l2_normalize(query), l2_normalize(reference)
    if distance == "euclidean":
        ones = torch.ones(len(query), 1, dtype=query.dtype, device=query.device)
        sq_norms = (reference * reference).sum(1, keepdim=True)
        return torch.cat([-2 * query, ones], 1), torch.cat([reference, sq_norms], 1)
    return -query, reference


def _sortable_bits_numpy(values: np.ndarray) -> np.ndarray:
    """int64 keys ordered like the float32 values (-0.0 folded into +0.0)."""
    bits = (values + np.float32(0)).view(np.int32)
    return np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int64)


def _select_numpy(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k smallest ``(score, column)`` keys of each row, in that order."""
    rows, n = scores.shape
    kth = np.partition(scores, k - 1, axis=1)[:, k - 1 : k]
    flat = np.flatnonzero(scores <= kth)  # >= k per row; more only when scores tie at the k-th
    row = flat // n
    keys = (_sortable_bits_numpy(scores.ravel()[flat]) << _INDEX_BITS) | (flat - row * n)
    if len(flat) == rows * k:
        keys = keys.reshape(rows, k)
    else:
        counts = np.bincount(row, minlength=rows)
        start = np.cumsum(counts) - counts
        padded = np.full((rows, counts.max()), np.iinfo(np.int64).max)
        padded[row, np.arange(len(flat)) - start[row]] = keys
        keys = padded
    keys.sort(axis=1)
    return keys[:, :k] & _INDEX_MASK


def _select_torch(scores: torch.Tensor, k: int) -> torch.Tensor:
    """As `_select_numpy`, with one ``topk`` over composite int64 keys (for CUDA)."""
    bits = (scores + 0.0).view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()
    column = torch.arange(scores.shape[1], device=scores.device)
    keys = (bits << _INDEX_BITS) | column
    return torch.topk(keys, k, dim=1, largest=False, sorted=True).values & _INDEX_MASK


def _available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def default_workers(device: torch.device) -> int:
    """Parallel chunk workers: the torch thread count on CPU (at most 8), 1 on an accelerator."""
    return 1 if device.type != "cpu" else max(1, min(torch.get_num_threads(), 8))


def chunk_size_for(
    n_reference: int, k: int, workers: int = 1, memory_budget_mb: float | None = None
) -> int:
    """Query rows per chunk so that ``workers`` chunks in flight fit the memory budget.

    A row costs about ``9 N`` bytes (float32 scores, their partitioned copy, a mask) plus
    ``64 k`` bytes (keys, neighbour labels, metric temporaries). The budget defaults to
    512 MB, capped at a quarter of the machine's available memory.
    """
    if memory_budget_mb is None:
        budget = DEFAULT_MEMORY_BUDGET_MB * 2**20
        available = _available_memory_bytes()
        if available is not None:
            budget = min(budget, available // 4)
    else:
        if memory_budget_mb <= 0:
            raise ConfigError(f"memory_budget_mb must be positive, got {memory_budget_mb}")
        budget = int(memory_budget_mb * 2**20)
    per_row = 9 * n_reference + 64 * k
    return max(1, budget // (per_row * max(1, workers)))


def map_neighbours(
    fn: Callable[[int, np.ndarray], T],
    query: torch.Tensor,
    reference: torch.Tensor,
    k: int,
    *,
    distance: str = "euclidean",
    exclude: np.ndarray | None = None,
    chunk_size: int | None = None,
    memory_budget_mb: float | None = None,
    workers: int | None = None,
) -> Iterator[T]:
    """Yield ``fn(start, neighbours)`` for each query chunk, in order.

    ``neighbours`` is an int64 array (rows x k) of reference indices in exact rank order for query
    rows ``start .. start + rows``. ``exclude`` (int, one per query) names a reference index the
    query must not retrieve. ``fn`` runs in the worker threads, so it can reduce each chunk
    (e.g. to per-query metrics) while other chunks are searched. ``query`` and ``reference`` are
    float32 tensors on the same device.
    """
    n_query, n_ref = len(query), len(reference)
    available = n_ref - (exclude is not None)
    if not 1 <= k <= available:
        raise ConfigError(f"k must be in [1, {available}], got {k}")
    if n_ref > _INDEX_MASK // 2:
        raise ConfigError(f"at most {_INDEX_MASK // 2} reference items are supported")
    workers = workers or default_workers(query.device)
    if chunk_size is None:
        chunk_size = chunk_size_for(n_ref, k, workers, memory_budget_mb)
    elif chunk_size < 1:
        raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
    q_aug, r_aug = _augment(query, reference, distance)
    r_aug_t = r_aug.T

    def run(start: int) -> T:
        stop = min(start + chunk_size, n_query)
        with torch.no_grad():
            scores = q_aug[start:stop] @ r_aug_t
            if exclude is not None:
                rows = torch.arange(stop - start, device=scores.device)
                cols = torch.as_tensor(exclude[start:stop], device=scores.device)
                scores[rows, cols] = float("inf")
            if scores.device.type == "cpu":
                neighbours = _select_numpy(scores.numpy(), k)
            else:
                neighbours = _select_torch(scores, k).cpu().numpy()
        del scores
        return fn(start, neighbours)

    starts = range(0, n_query, chunk_size)
    if workers == 1:
        yield from map(run, starts)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for start in starts:
            pending.append(pool.submit(run, start))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def knn(
    query: torch.Tensor,
    reference: torch.Tensor,
    k: int,
    *,
    distance: str = "euclidean",
    exclude: np.ndarray | None = None,
    chunk_size: int | None = None,
    memory_budget_mb: float | None = None,
) -> torch.Tensor:
    """Exact top-k reference indices (int64, n_query x k) in rank order; see the module doc.

    >>> ref = torch.tensor([[0.0], [1.0], [1.0], [3.0]])
    >>> knn(torch.tensor([[1.0], [2.0]]), ref, 3).tolist()  # ties: lower index first
    [[1, 2, 0], [1, 2, 3]]
    >>> knn(ref, ref, 1, exclude=np.arange(4)).tolist()  # self excluded by index, not distance
    [[1], [2], [1], [1]]
    """
    parts = map_neighbours(
        lambda _start, nb: nb,
        query.float(),
        reference.float(),
        k,
        distance=distance,
        exclude=exclude,
        chunk_size=chunk_size,
        memory_budget_mb=memory_budget_mb,
    )
    return torch.from_numpy(np.concatenate(list(parts)))


__all__ = ["DISTANCES", "chunk_size_for", "default_workers", "knn", "l2_normalize", "map_neighbours"]
