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

import threading
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
MAX_CHUNK_ROWS = 512  # larger blocks do not make the matrix product faster
_INDEX_BITS = 32
_INDEX_MASK = (1 << _INDEX_BITS) - 1

T = TypeVar("T")


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, ``x / max(||x||, 1e-12)`` (as ``F.normalize``)."""
    return F.normalize(x, p=2, dim=1)


def check_distance(distance: str) -> None:
    """Raise ConfigError unless ``distance`` is one of `DISTANCES`."""
    if distance not in DISTANCES:
        raise ConfigError(f"unknown distance {distance!r}; choose one of {', '.join(DISTANCES)}")


def score_operands(
    query: torch.Tensor, reference: torch.Tensor, distance: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Operands whose product is the score matrix: ``[-2q, 1] . [r, ||r||^2]`` or ``-q . r``."""
    check_distance(distance)
    if distance == "cosine":
        query, reference = l2_normalize(query), l2_normalize(reference)
    if distance == "euclidean":
        ones = torch.ones(len(query), 1, dtype=query.dtype, device=query.device)
        sq_norms = (reference * reference).sum(1, keepdim=True)
        return torch.cat([-2 * query, ones], 1), torch.cat([reference, sq_norms], 1)
    return -query, reference


def _composite_keys(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """int64 keys ordered like ``(value, column)`` for float32 values (-0.0 equal to +0.0).

    The high 32 bits are the float's sign-magnitude bits turned into two's complement.
    """
    keys = values.view(np.int32).astype(np.int64)
    negative = keys < 0
    keys &= 0x7FFFFFFF
    np.negative(keys, out=keys, where=negative)
    keys <<= _INDEX_BITS
    keys |= columns
    return keys


def _drop_boundary_ties(
    flat: np.ndarray, values: np.ndarray, n: int, k: int, kth: np.ndarray
) -> np.ndarray:
    """Mask keeping, in rows with more than k candidates, only the lowest-index ties at the k-th.

    ``flat`` holds the row-major positions of the entries <= the row's k-th smallest value
    ``kth``; rows with more than k of them have several entries equal to that value.
    """
    counts = np.bincount(flat // n, minlength=len(kth))
    starts = np.cumsum(counts) - counts
    keep = np.ones(len(flat), dtype=bool)
    for row in np.flatnonzero(counts > k):  # rare outside tie-heavy data
        start = starts[row]
        equal = start + np.flatnonzero(values[start : start + counts[row]] == kth[row])
        keep[equal[len(equal) - (counts[row] - k) :]] = False
    return keep


def _select_numpy(
    scores: np.ndarray, k: int, work: np.ndarray | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Column indices of the k smallest ``(score, column)`` keys of each row, in that order.

    ``work`` (float32) and ``mask`` (bool), shaped like ``scores``, are optional reusable buffers.
    """
    rows, n = scores.shape
    work = np.empty_like(scores) if work is None else work
    np.copyto(work, scores)
    work.partition(k - 1, axis=1)
    kth = work[:, k - 1]
    flat = np.flatnonzero(np.less_equal(scores, kth[:, None], out=mask))
    values = scores.ravel()[flat]
    if len(flat) > rows * k:
        keep = _drop_boundary_ties(flat, values, n, k, kth)
        flat, values = flat[keep], values[keep]
    flat, values = flat.reshape(rows, k), values.reshape(rows, k)
    keys = _composite_keys(values, flat - n * np.arange(rows)[:, None])
    keys.sort(axis=1)
    return keys & _INDEX_MASK


def _select_torch(scores: torch.Tensor, k: int) -> torch.Tensor:
    """As `_select_numpy`, with one ``topk`` over all composite keys (for accelerators)."""
    bits = scores.view(torch.int32).long()
    keys = torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits) << _INDEX_BITS
    keys |= torch.arange(scores.shape[1], device=scores.device)
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
    n_reference: int,
    k: int,
    workers: int = 1,
    memory_budget_mb: float | None = None,
    accelerator: bool = False,
) -> int:
    """Query rows per chunk so that ``workers`` chunks in flight fit the memory budget.

    A row costs about ``9 N`` bytes on CPU (float32 scores, their partitioned copy, a mask) or
    ``20 N`` on an accelerator (scores and int64 keys), plus ``64 k`` bytes (neighbours, labels,
    metric temporaries). The budget defaults to 512 MB, capped at a quarter of the machine's
    available memory; chunks stop growing at `MAX_CHUNK_ROWS` rows.
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
    per_row = (20 if accelerator else 9) * n_reference + 64 * k
    return max(1, min(MAX_CHUNK_ROWS, budget // (per_row * max(1, workers))))


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
        accelerator = query.device.type != "cpu"
        chunk_size = chunk_size_for(n_ref, k, workers, memory_budget_mb, accelerator)
    elif chunk_size < 1:
        raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
    q_aug, r_aug = score_operands(query, reference, distance)
    r_aug_t = r_aug.T

    buffers = threading.local()  # per worker: score block, partition copy, mask

    def run(start: int) -> T:
        stop = min(start + chunk_size, n_query)
        rows = stop - start
        if not hasattr(buffers, "scores"):
            shape = (min(chunk_size, n_query), n_ref)
            buffers.scores = torch.empty(shape, device=query.device)
            if query.device.type == "cpu":
                buffers.work, buffers.mask = np.empty(shape, np.float32), np.empty(shape, bool)
        with torch.no_grad():
            scores = torch.mm(q_aug[start:stop], r_aug_t, out=buffers.scores[:rows])
            if exclude is not None:
                cols = torch.as_tensor(exclude[start:stop], device=scores.device)
                scores[torch.arange(rows, device=scores.device), cols] = float("inf")
            if scores.device.type == "cpu":
                neighbours = _select_numpy(
                    scores.numpy(), k, buffers.work[:rows], buffers.mask[:rows]
                )
            else:
                neighbours = _select_torch(scores, k).cpu().numpy()
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
