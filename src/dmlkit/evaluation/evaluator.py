"""`Evaluator` / `evaluate`: one exact neighbour ranking, every retrieval metric from it.

Modes: with ``reference=None`` every query is also a reference item and never retrieves itself
(compared-to-self: CUB, Cars, SOP); otherwise queries search a separate gallery (In-Shop).
R_i = # reference items with query i's label (minus itself in compared-to-self mode); queries
with R_i = 0 are "lone" and left out of every kNN metric (NaN when none remain). The ranking
is computed once, streamed in query chunks, up to k = max(max R_i, max recall K, MAP@K's K);
each chunk is reduced to per-query metric values before the next one is held, so memory is
O(chunk x N). NMI/AMI cluster the query set (k-means on the embeddings' device: faiss on the
CPU, torch elsewhere). On request (``nn_classification``) a k = 1 pass over every query gives
1-NN classification scores. Definitions: docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dmlkit.base.progress import bar, phase
from dmlkit.errors import ConfigError, EvaluationError
from dmlkit.evaluation import metrics as M
from dmlkit.evaluation.classification import CLASSIFICATION_METRICS, classification_scores
from dmlkit.evaluation.clustering import (
    CLUSTERING_METRICS,
    MAX_POINTS_PER_CENTROID,
    clustering_scores,
)
from dmlkit.evaluation.knn import check_distance, l2_normalize, map_neighbours

KNN_METRICS = ("precision_at_1", "recall_at_k", "r_precision", "map_at_r", "map_at_k")
METRICS = KNN_METRICS + CLUSTERING_METRICS
OPTIONAL_METRICS = CLASSIFICATION_METRICS  # computed only when named in ``metrics``
PML_KEYS = {  # dmlkit key -> PML AccuracyCalculator key (MAP@K: "mean_average_precision")
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "map_at_r": "mean_average_precision_at_r",
    "nmi": "NMI",
    "ami": "AMI",
}
# Squared norms above this could overflow float32 scores.
_MAX_SQUARED_NORM = 1e37


def _embeddings(x: Any, name: str, device: torch.device) -> torch.Tensor:
    """``x`` as a finite (n x d) tensor on ``device``: float64 input kept, anything else float32."""
    if not isinstance(x, torch.Tensor):
        try:
            a = np.asarray(x)
        except ValueError as err:
            raise EvaluationError(f"{name} is not a rectangular array: {err}") from None
        if a.dtype.kind not in "iuf":
            raise EvaluationError(f"{name} must be numeric, got dtype {a.dtype}")
        x = torch.from_numpy(a)
    if x.dtype == torch.bool or x.is_complex():
        raise EvaluationError(f"{name} must be real numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        raise EvaluationError(f"{name} must be 2-D (items x dims), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise EvaluationError(f"{name} is empty (shape {tuple(x.shape)})")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.detach().to(device=device, dtype=dtype)
    if not torch.isfinite(x).all():
        raise EvaluationError(f"{name} contains NaN or infinite values")
    if (x * x).sum(1).max() > _MAX_SQUARED_NORM:
        raise EvaluationError(f"{name} has values too large for float32 distances")
    return x


def _check_includes_query(
    q: torch.Tensor, q_labels: np.ndarray, r: torch.Tensor, r_labels: np.ndarray
) -> None:
    """With ref_includes_query, the reference must begin with the queries and their labels."""
    n = len(q)
    if len(r) < n or not torch.equal(q, r[:n]) or not np.array_equal(q_labels, r_labels[:n]):
        raise EvaluationError(
            "ref_includes_query=True needs the first len(query) reference items and labels "
            "to equal the query embeddings and labels"
        )


def pml_named(results: dict[str, Any], map_at_k: int | None = None) -> dict[str, Any]:
    """The metrics PML's AccuracyCalculator also computes, under its key names.

    >>> pml_named({"precision_at_1": 1.0, "map_at_r": 0.5, "recall_at_2": 1.0})
    {'precision_at_1': 1.0, 'mean_average_precision_at_r': 0.5}
    """
    names = dict(PML_KEYS)
    if map_at_k is not None:
        names[f"map_at_{map_at_k}"] = "mean_average_precision"
    return {pml: results[ours] for ours, pml in names.items() if ours in results}


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    """``y`` as an int64 vector of length ``n``."""
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.ndim != 1:
        raise EvaluationError(f"{name} must be 1-D, got shape {a.shape}")
    if len(a) != n:
        raise EvaluationError(f"{name} has {len(a)} entries but there are {n} embeddings")
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        a = a.astype(np.int64)
    if a.dtype.kind not in "iub":
        raise EvaluationError(f"{name} must be integer class ids, got dtype {a.dtype}")
    return a.astype(np.int64)


class Evaluator:
    """Retrieval evaluation with a fixed configuration (see `evaluate` for the arguments).

    >>> x = torch.tensor([[0.0], [0.1], [1.0], [1.2]])
    >>> Evaluator(recall_ks=(1,), metrics=["precision_at_1", "map_at_r"])(x, [0, 0, 1, 1])
    {'precision_at_1': 1.0, 'map_at_r': 1.0}
    """

    def __init__(
        self,
        *,
        recall_ks: Sequence[int] = (1, 2, 4, 8),
        map_at_k: int | None = None,
        metrics: Sequence[str] | None = None,
        distance: str = "euclidean",
        normalize: bool = False,
        avg_of_avgs: bool = False,
        per_class: bool = False,
        chunk_size: int | None = None,
        kmeans_seed: int = 0,
        kmeans_max_points_per_centroid: int | None = MAX_POINTS_PER_CENTROID,
        device: str | torch.device | None = None,
        memory_budget_mb: float | None = None,
        workers: int | None = None,
        progress: str | None = None,
        pml_keys: bool = False,
    ) -> None:
        check_distance(distance)
        names = list(METRICS if metrics is None else metrics)
        known = METRICS + OPTIONAL_METRICS
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ConfigError(f"unknown metrics {unknown}; choose from {', '.join(known)}")
        if map_at_k is None:
            if metrics is not None and "map_at_k" in names:
                raise ConfigError("metric map_at_k needs map_at_k=K")
            names = [n for n in names if n != "map_at_k"]
        elif isinstance(map_at_k, bool) or not isinstance(map_at_k, int) or map_at_k < 1:
            raise ConfigError(f"map_at_k must be a positive integer, got {map_at_k!r}")
        ks = list(dict.fromkeys(recall_ks))
        if "recall_at_k" in names and (
            not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks)
        ):
            raise ConfigError(f"recall_ks must be positive integers, got {list(recall_ks)!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
        self.names = [n for n in known if n in names]
        self.recall_ks = ks
        self.map_at_k = map_at_k
        self.distance = distance
        self.normalize = normalize or distance == "cosine"
        self.avg_of_avgs = avg_of_avgs
        self.per_class = per_class
        self.chunk_size = chunk_size
        self.kmeans_seed = kmeans_seed
        self.kmeans_max_points_per_centroid = kmeans_max_points_per_centroid
        self.device = None if device is None else torch.device(device)
        self.memory_budget_mb = memory_budget_mb
        self.workers = workers
        self.progress = progress
        self.pml_keys = pml_keys

    def _knn_values(
        self,
        per_query: dict[str, np.ndarray],
        chunk_start: int,
        neighbours: np.ndarray,
        q_codes: np.ndarray,
        r_codes: np.ndarray,
        num_relevant: np.ndarray,
    ) -> None:
        """Fill ``per_query[name][rows]`` for one chunk of the ranking."""
        rows = slice(chunk_start, chunk_start + len(neighbours))
        rel = r_codes[neighbours] == q_codes[rows, None]
        r = num_relevant[rows]
        k_all = rel.shape[1]
        for name in self.names:
            if name == "precision_at_1":
                per_query[name][rows] = M.precision_at_1(rel)
            elif name == "recall_at_k":
                for k in self.recall_ks:
                    per_query[f"recall_at_{k}"][rows] = M.recall_at_k(rel, min(k, k_all))
            elif name == "r_precision":
                per_query[name][rows] = M.r_precision(rel, r)
            elif name == "map_at_r":
                per_query[name][rows] = M.map_at_r(rel, r)
            elif name == "map_at_k":
                per_query[f"map_at_{self.map_at_k}"][rows] = M.map_at_k(
                    rel, r, min(self.map_at_k, k_all)
                )

    def _keys(self) -> list[str]:
        keys = []
        for name in self.names:
            if name == "recall_at_k":
                keys += [f"recall_at_{k}" for k in self.recall_ks]
            elif name == "map_at_k":
                keys.append(f"map_at_{self.map_at_k}")
            elif name not in OPTIONAL_METRICS:
                keys.append(name)
        return keys

    def _inputs(
        self, query: Any, query_labels: Any, reference: Any, reference_labels: Any
    ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
        """Validated float32/float64 embeddings (normalized if asked) and int64 labels."""
        if (reference is None) != (reference_labels is None):
            raise EvaluationError("give both reference and reference_labels, or neither")
        device = self.device or (query.device if isinstance(query, torch.Tensor) else None)
        q = _embeddings(query, "query", device or torch.device("cpu"))
        q_labels = _labels(query_labels, len(q), "query_labels")
        if reference is None:
            r, r_labels = q, q_labels
        else:
            r = _embeddings(reference, "reference", q.device)
            r_labels = _labels(reference_labels, len(r), "reference_labels")
            if r.shape[1] != q.shape[1]:
                raise EvaluationError(f"query has {q.shape[1]} dims but reference has {r.shape[1]}")
        if len(np.unique(np.concatenate([q_labels, r_labels]))) < 2:
            raise EvaluationError("all items share one label: retrieval metrics are meaningless")
        if self.normalize:
            q = l2_normalize(q)
            r = q if reference is None else l2_normalize(r)
        return q, q_labels, r, r_labels

    def _per_query(
        self,
        q: torch.Tensor,
        q_labels: np.ndarray,
        r: torch.Tensor,
        r_labels: np.ndarray,
        self_mode: bool,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """kNN metric values of the non-lone queries, and those queries' indices."""
        classes, codes = np.unique(np.concatenate([q_labels, r_labels]), return_inverse=True)
        q_codes = codes[: len(q)]
        r_codes = codes[len(q) :]
        num_relevant = np.bincount(r_codes, minlength=len(classes))[q_codes] - int(self_mode)
        active = np.flatnonzero(num_relevant > 0)
        keys = [key for key in self._keys() if key not in CLUSTERING_METRICS]
        per_query = {key: np.empty(len(active)) for key in keys}
        if not keys or not len(active):
            return per_query, active
        k = int(num_relevant[active].max())  # R of every query, then recall Ks and MAP@K's K
        if "recall_at_k" in self.names:
            k = max(k, *self.recall_ks)
        if "map_at_k" in self.names:
            k = max(k, self.map_at_k)
        a_codes, a_relevant = q_codes[active], num_relevant[active]

        def values(start: int, neighbours: np.ndarray) -> int:
            self._knn_values(per_query, start, neighbours, a_codes, r_codes, a_relevant)
            return len(neighbours)

        with bar(f"{self.progress}: nearest neighbours", len(active), self.progress is not None,
                 unit="queries") as advance:
            for rows in map_neighbours(
                values,
                q[torch.as_tensor(active, device=q.device)],
                r,
                min(k, len(r) - int(self_mode)),
                distance="dot" if self.distance == "cosine" else self.distance,
                exclude=active if self_mode else None,
                chunk_size=self.chunk_size,
                memory_budget_mb=self.memory_budget_mb,
                workers=self.workers,
            ):
                advance(rows)
        return per_query, active

    def _nearest_labels(
        self, q: torch.Tensor, r: torch.Tensor, r_labels: np.ndarray, self_mode: bool
    ) -> np.ndarray:
        """The label of every query's nearest reference item (itself excluded in self mode;
        ties: the lower reference index), i.e. a 1-NN classifier's predictions."""
        pred = np.empty(len(q), dtype=np.int64)

        def fill(start: int, neighbours: np.ndarray) -> None:
            pred[start : start + len(neighbours)] = r_labels[neighbours[:, 0]]

        for _ in map_neighbours(
            fill, q, r, 1, distance="dot" if self.distance == "cosine" else self.distance,
            exclude=np.arange(len(q)) if self_mode else None, chunk_size=self.chunk_size,
            memory_budget_mb=self.memory_budget_mb, workers=self.workers,
        ):
            pass
        return pred

    def __call__(
        self,
        query: Any,
        query_labels: Any,
        reference: Any | None = None,
        reference_labels: Any | None = None,
        ref_includes_query: bool = False,
    ) -> dict[str, Any]:
        """Metrics of ``query`` against ``reference`` (or against itself when None).

        ``ref_includes_query`` (PML's switch): the first len(query) reference items are the
        queries themselves, so query i never retrieves reference item i and R_i counts one less.
        """
        q, q_labels, r, r_labels = self._inputs(query, query_labels, reference, reference_labels)
        self_mode = reference is None or ref_includes_query
        if reference is not None and ref_includes_query:
            _check_includes_query(q, q_labels, r, r_labels)
        per_query, active = self._per_query(q, q_labels, r, r_labels, self_mode)
        active_labels = q_labels[active]
        results: dict[str, Any] = {
            key: M.mean_over_queries(values, active_labels, self.avg_of_avgs)
            for key, values in per_query.items()
        }
        clustering = tuple(n for n in self.names if n in CLUSTERING_METRICS)
        if clustering:  # faiss on the CPU, torch k-means where q is (`kmeans_backend`)
            with phase(f"{self.progress}: k-means ({', '.join(clustering)})",
                       self.progress is not None):
                results.update(clustering_scores(
                    q, q_labels, clustering, self.kmeans_seed,
                    max_points_per_centroid=self.kmeans_max_points_per_centroid))
        if "nn_classification" in self.names:
            pred = self._nearest_labels(q, r, r_labels, self_mode)
            results.update(classification_scores(q_labels, pred))
        if self.per_class:
            nan = dict.fromkeys(per_query, float("nan"))
            by_class = {int(c): dict(nan) for c in np.unique(q_labels)}
            for key, values in per_query.items():
                for c, v in M.per_class_means(values, active_labels).items():
                    by_class[c][key] = v
            results["per_class"] = by_class
        if self.pml_keys:
            results.update(pml_named(results, self.map_at_k))
        return results

    evaluate = __call__


def evaluate(
    query: Any,
    query_labels: Any,
    reference: Any | None = None,
    reference_labels: Any | None = None,
    ref_includes_query: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Retrieval metrics of ``query`` (n x d) against ``reference`` or, if None, itself.

    ``options`` are `Evaluator`'s: recall_ks=(1, 2, 4, 8), map_at_k=None, metrics=None,
    distance="euclidean", normalize=False, avg_of_avgs=False, per_class=False,
    chunk_size=None, kmeans_seed=0, kmeans_max_points_per_centroid=256, device=None,
    memory_budget_mb=None, workers=None, progress=None (a description: then the neighbour
    search shows a bar, k-means a phase), pml_keys=False (True adds PML's names:
    "mean_average_precision_at_r", "NMI", ...).
    Returns "precision_at_1", "recall_at_{k}" per k in ``recall_ks``, "r_precision",
    "map_at_r", "map_at_{K}" (when ``map_at_k=K``), "nmi", "ami"; ``metrics`` selects a subset
    by name (precision_at_1, recall_at_k, r_precision, map_at_r, map_at_k, nmi, ami), and
    "nn_classification" (only when named) adds "nn_accuracy", "nn_macro_precision",
    "nn_macro_recall", "nn_macro_f1" of a 1-NN classifier over the reference set.
    ``ref_includes_query``: as PML's, the reference starts with the queries (each query skips
    its own item). ``distance``: "euclidean", "cosine" (L2-normalizes) or "dot";
    ``normalize`` L2-normalizes first (as PML's tester). ``avg_of_avgs`` averages per class
    first; ``per_class`` adds
    "per_class": {label: {metric: value}} (NaN for lone classes). ``chunk_size`` (query rows per
    block) defaults to what fits ``memory_budget_mb`` (512 MB) over ``workers`` threads;
    ``device`` defaults to the query tensor's. k-means uses ``kmeans_seed`` (PML: 1234) and
    trains on at most ``kmeans_max_points_per_centroid`` points per cluster (None: all, as PML
    before 1.0).

    Query 3.0 ranks 3.5 (hit), 2.0 (miss), 1.0 (hit): R = 2, AP@R = 1/2. Query 1.0 has two
    misses at distance 1; query 0.0 finds its class-mate second.

    >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [3.5]])
    >>> evaluate(x, [0, 1, 0, 1, 1], recall_ks=(1, 2), metrics=["recall_at_k", "map_at_r"])
    {'recall_at_1': 0.4, 'recall_at_2': 0.6, 'map_at_r': 0.2}
    """
    return Evaluator(**options)(
        query, query_labels, reference, reference_labels, ref_includes_query
    )


def concatenate_normalized(embeddings: Sequence[Any]) -> torch.Tensor:
    """L2-normalize each model's embeddings, then concatenate them (MLRC's concatenated mode);
    float64 only when every part is.

    >>> concatenate_normalized([torch.tensor([[3.0, 4.0]]), torch.tensor([[2.0]])]).tolist()
    [[0.6000000238418579, 0.800000011920929, 1.0]]
    """
    if not embeddings:
        raise EvaluationError("concatenate_normalized needs at least one embedding matrix")
    first = embeddings[0]
    device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
    parts = [_embeddings(e, f"embeddings[{i}]", device) for i, e in enumerate(embeddings)]
    if len({len(p) for p in parts}) > 1:
        raise EvaluationError(
            f"embedding matrices have different numbers of rows: {[len(p) for p in parts]}"
        )
    dtype = torch.float64 if all(p.dtype == torch.float64 for p in parts) else torch.float32
    return torch.cat([l2_normalize(p).to(dtype) for p in parts], dim=1)
