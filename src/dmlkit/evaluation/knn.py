"""Exact k-nearest-neighbour ranking, streamed in query chunks (memory O(chunk x N), never N x N).

Ranking. For a query q and reference items r_j the exact score is the squared L2 distance
``||q - r_j||^2`` (``"euclidean"``) or the negated inner product ``-q.r_j`` (``"dot"``;
``"cosine"`` first L2-normalizes both sides), computed in float64 from the inputs (float64 input
is kept, float32 input is widened exactly). Neighbours are ordered by increasing exact score;
among *equal* scores the lower reference index ranks first, including at the k-th position.

Search, then exact re-scoring. One float32 matrix product gives every score up to a per-query
constant, ``s_j = ||r_j||^2 - 2 q.r_j`` (or ``-q.r_j``), with an error of at most
``tol = (d + 8) u (2 ||q|| M + M^2)`` (``(d + 8) u ||q|| M`` for dot; u = 2^-24, M = max ||r_j||;
the worst-case bound of a length-(d+1) dot product plus the rounding of float64 input). The
candidates are the items with ``s_j <= s_(k) + 2 tol`` (s_(k): the k-th smallest float32 score);
every other item is exactly farther than k candidates. Sorted by float32 score, candidates whose
score gaps are all <= 2 tol form near-tie groups: only inside such a group can the float32
order differ from the exact one, so group members are re-scored in float64 (direct differences,
``sum((r_j - q)^2)``) and re-sorted by (exact score, index); isolated candidates keep their
place. The result is the float64 brute-force order, whatever the float32 rounding.
Where near ties are dense (more than 1/48 of the scores re-scored, measured on the chunks
already done), a chunk instead takes one float64 matrix product of the whole block (error
bound tol64, the same formula with u = 2^-53), rounded to float32 for the selection; group
members are ordered by their float64 scores, or by direct differences in a row where two of
them are within 2 tol64.

Self-exclusion is by index: ``exclude[i]`` names one reference column that query i never
retrieves (compared-to-self mode), whatever its distance; duplicates of the query stay.

On CPU the selection runs in numpy (a value partition finds the k-th smallest score, then the
candidates are sorted by a composite (score, index) key), with chunks processed in parallel
threads. On an accelerator the scores are one float64 matrix product and a stable sort
(exact to float64 rounding of ``||r||^2 - 2 q.r``, about 1e-14 relative: bit-equal duplicates tie).
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
_UNIT_ROUNDOFF = 2.0**-24  # float32
_EXACT_BLOCK = 4096  # pairs re-scored at once (memory ~ 2 x 8 d bytes each)
# Re-scored pairs per score above which a float64 product of the whole block is cheaper.
_DENSE_FRACTION = 1 / 48

T = TypeVar("T")


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, ``x / max(||x||, 1e-12)`` (as ``F.normalize``), each row
    first divided by the power of two at or below its largest ``|x|`` (exact): rows of any scale
    (1e-30, 1e30) neither underflow nor overflow in the norm and give the same unit rows."""
    top = x.abs().amax(dim=1, keepdim=True) if x.numel() else x[:, :1]
    _, exponent = torch.frexp(torch.where(top > 0, top, torch.ones_like(top)))
    return F.normalize(torch.ldexp(x, 1 - exponent), p=2, dim=1)


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


def _exact_operands(
    query: torch.Tensor, reference: torch.Tensor, distance: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs as float64 (float32, float64 or integer input: exactly), unit-normalized
    for cosine."""
    check_distance(distance)
    query, reference = query.detach().double(), reference.detach().double()
    if distance == "cosine":
        query, reference = l2_normalize(query), l2_normalize(reference)
    return query, reference


def score_scale(query: torch.Tensor, reference: torch.Tensor, distance: str) -> np.ndarray:
    """Per query row, ``2 ||q|| M + M^2`` (``||q|| M`` for dot; M = max ||r_j||): a bound on
    the sum of |terms| of every score of the row, which scales its rounding errors (float64)."""
    q_norm = torch.linalg.vector_norm(query.double(), dim=1).cpu().numpy()
    m = float(torch.linalg.vector_norm(reference.double(), dim=1).max())
    return q_norm * m if distance == "dot" else 2 * q_norm * m + m * m


def score_tolerance(scale: np.ndarray, d: int, unit_roundoff: float = _UNIT_ROUNDOFF) -> np.ndarray:
    """A bound on |computed score - exact score| for rows of ``scale`` (`score_scale`): a
    length-(d+1) dot product and the rounding of its inputs, ``(d + 8) u scale``."""
    return (d + 8) * (unit_roundoff * scale + np.finfo(np.float32).tiny)


def exact_scores(
    query: np.ndarray, reference: np.ndarray, cols: np.ndarray, distance: str
) -> np.ndarray:
    """float64 ``||q_i - r_cols[i, j]||^2`` (or ``-q_i . r_cols[i, j]`` for dot), shaped like
    ``cols``, from float64 ``query`` rows and a float32 or float64 ``reference`` (widened
    exactly)."""
    out = np.empty(cols.shape)
    step = max(1, _EXACT_BLOCK // max(1, cols.shape[1]))
    for start in range(0, len(cols), step):
        part = slice(start, start + step)
        r = reference[cols[part]].astype(np.float64, copy=False)
        q = query[part, None, :]
        if distance == "dot":
            out[part] = -np.einsum("ijk,ijk->ij", np.broadcast_to(q, r.shape), r)
        else:
            r -= q
            out[part] = np.einsum("ijk,ijk->ij", r, r)
    return out


def _select_numpy(
    scores: np.ndarray,
    k: int,
    tol: np.ndarray | None = None,
    rescore: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    work: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Column indices of the k smallest ``(exact score, column)`` keys of each row, in order.

    ``scores`` are float32 within ``tol`` (per row) of the exact ones, or of values ordered
    like them, which ``rescore(cols, padding)`` returns for a (rows x m) block of columns
    (``padding``: slots to ignore); without them the float32 scores are exact.
    ``work`` (float32) and ``mask`` (bool), shaped like ``scores``, are optional buffers.
    """
    rows, n = scores.shape
    work = np.empty_like(scores) if work is None else work
    np.copyto(work, scores)
    work.partition(k - 1, axis=1)
    limit = work[:, k - 1]
    if tol is not None:  # rounding the limit must not cut a candidate
        limit = (limit.astype(np.float64) + 2 * tol).astype(np.float32)
        limit = np.nextafter(limit, np.float32(np.inf))
    flat = np.flatnonzero(np.less_equal(scores, limit[:, None], out=mask))
    row_of = flat // n
    counts = np.bincount(row_of, minlength=rows)
    width = int(counts.max())
    slot = np.arange(len(flat)) - (np.cumsum(counts) - counts)[row_of]
    cols = np.full((rows, width), n, dtype=np.int64)  # padding: column n, score +inf
    values = np.full((rows, width), np.inf, dtype=np.float32)
    cols[row_of, slot] = flat - row_of * n
    values[row_of, slot] = scores.ravel()[flat]
    keys = _composite_keys(values, cols)
    keys.sort(axis=1)
    cols = keys & _INDEX_MASK
    if tol is not None and rescore is not None and width > 1:
        _sort_near_ties(scores, cols, tol, rescore)
    return cols[:, :k]


def _sort_near_ties(
    scores: np.ndarray,
    cols: np.ndarray,
    tol: np.ndarray,
    rescore: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> None:
    """Re-order, in place, the members of runs of ``cols`` whose float32 score gaps are
    <= 2 tol by (exact score, column). Padding columns (== n, score +inf) never join a run.

    Runs are more than 2 tol apart, so their exact scores keep the runs' order: sorting all
    members of a row at once puts each member back into its own run's slots.
    """
    rows, width = cols.shape
    n = scores.shape[1]
    values = np.take_along_axis(scores, np.minimum(cols, n - 1), axis=1)
    values[cols == n] = np.inf
    with np.errstate(invalid="ignore"):  # inf - inf between paddings: not linked
        linked = np.diff(values, axis=1) <= 2 * tol[:, None]
    member = np.zeros((rows, width), dtype=bool)
    member[:, 1:] |= linked
    member[:, :-1] |= linked
    where = np.flatnonzero(member)
    if not len(where):
        return
    flat_cols = cols.reshape(-1)
    members, row_of = flat_cols[where], where // width
    count = member.sum(1)
    slot = np.arange(len(where)) - np.repeat(np.cumsum(count) - count, count)
    packed = np.zeros((rows, int(count.max())), dtype=np.int64)
    packed[row_of, slot] = members
    padding = np.arange(packed.shape[1]) >= count[:, None]
    exact = rescore(packed, padding)
    exact[padding] = np.inf
    order = np.argsort(exact, axis=1)
    ranked = np.take_along_axis(exact, order, axis=1)
    tied = np.flatnonzero(((ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] < np.inf)).any(1))
    if len(tied):  # equal exact scores (duplicates): the lower column first
        order[tied] = np.lexsort((packed[tied], exact[tied]), axis=1)
    flat_cols[where] = np.take_along_axis(packed, order, axis=1)[row_of, slot]


def _select_torch(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the k smallest ``(score, column)`` of each row (a stable sort; for
    float64 scores on accelerators)."""
    return torch.sort(scores, dim=1, stable=True).indices[:, :k]


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
    per_row = (20 if accelerator else 17) * n_reference + 64 * k
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
    float tensors on the same device (float64 input is kept: the ranking is exact in float64).
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
    exact_q, exact_r = _exact_operands(query, reference, distance)
    widened = reference.dtype == torch.float32 and distance != "cosine"
    distance = "dot" if distance == "cosine" else distance
    accelerated = query.device.type != "cpu"
    dtype = torch.float64 if accelerated else torch.float32
    q_aug, r_aug = score_operands(exact_q.to(dtype), exact_r.to(dtype), distance)
    r_aug_t = r_aug.T
    if not accelerated:
        scale, d = score_scale(exact_q, exact_r, distance), exact_q.shape[1]
        tol = score_tolerance(scale, d)
        tol64 = score_tolerance(scale, d, 2.0**-53)
        q64 = exact_q.numpy()  # float32 reference rows are gathered as such (half the bytes)
        r_exact = (reference.detach() if widened else exact_r).numpy()
        q_aug64, r_aug64 = score_operands(exact_q, exact_r, distance)
        r_aug64_t = r_aug64.T
        mode = {"dense": False, "pairs": 0, "rows": 0}  # switches once, from measured work

    buffers = threading.local()  # per worker: score block, partition copy, mask

    def run(start: int) -> T:
        stop = min(start + chunk_size, n_query)
        rows = stop - start
        if not hasattr(buffers, "scores"):
            shape = (min(chunk_size, n_query), n_ref)
            buffers.scores = torch.empty(shape, dtype=dtype, device=query.device)
            if not accelerated:
                buffers.work, buffers.mask = np.empty(shape, np.float32), np.empty(shape, bool)
        with torch.no_grad():
            if not accelerated and mode["dense"]:
                return fn(start, _select_dense(start, stop, buffers.scores[:rows]))
            scores = torch.mm(q_aug[start:stop], r_aug_t, out=buffers.scores[:rows])
            if exclude is not None:
                cols = torch.as_tensor(exclude[start:stop], device=scores.device)
                scores[torch.arange(rows, device=scores.device), cols] = float("inf")
            if accelerated:
                neighbours = _select_torch(scores, k).cpu().numpy()
            else:
                def rescore(cols: np.ndarray, _padding: np.ndarray) -> np.ndarray:
                    mode["pairs"] += cols.size
                    return exact_scores(q64[start:stop], r_exact, cols, distance)

                neighbours = _select_numpy(scores.numpy(), k, tol[start:stop], rescore,
                                           buffers.work[:rows], buffers.mask[:rows])
                mode["rows"] += rows
                mode["dense"] = mode["pairs"] > mode["rows"] * n_ref * _DENSE_FRACTION
        return fn(start, neighbours)

    def _select_dense(start: int, stop: int, scores: torch.Tensor) -> np.ndarray:
        """Many near ties: float64 scores of the whole block (one matrix product), rounded to
        float32 for the selection; near-tie members take their float64 score, or, in rows
        where two of those are within 2 tol64, the direct float64 distances."""
        rows = stop - start
        block = torch.mm(q_aug64[start:stop], r_aug64_t)
        if exclude is not None:
            block[torch.arange(rows), torch.as_tensor(exclude[start:stop])] = float("inf")
        scores.copy_(block)  # rounding to nearest is monotone
        block64, row_tol = block.numpy(), tol64[start:stop]

        def rescore(cols: np.ndarray, padding: np.ndarray) -> np.ndarray:
            values = np.take_along_axis(block64, cols, axis=1)
            ordered = np.sort(np.where(padding, np.inf, values), axis=1)
            with np.errstate(invalid="ignore"):  # inf - inf (excluded column): not close
                close = np.diff(ordered, axis=1) <= 2 * row_tol[:, None]
            close = np.flatnonzero(close.any(1))
            if len(close):
                values[close] = exact_scores(q64[start:stop][close], r_exact, cols[close],
                                             distance)
            return values

        dense_tol = score_tolerance(scale[start:stop], d, 2.0**-24 / (d + 8)) + row_tol
        return _select_numpy(scores.numpy(), k, dense_tol, rescore,
                             buffers.work[:rows], buffers.mask[:rows])

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
        query,
        reference,
        k,
        distance=distance,
        exclude=exclude,
        chunk_size=chunk_size,
        memory_budget_mb=memory_budget_mb,
    )
    return torch.from_numpy(np.concatenate(list(parts)))
