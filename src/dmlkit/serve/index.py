"""`GalleryIndex`: a faiss index of gallery embeddings, stored with a validated JSON sidecar.

Kinds: ``flat`` (exact), ``ivf`` (IVFFlat: k-means into ``nlist`` cells, ``nprobe`` cells
searched) and ``hnsw`` (HNSWFlat graph: ``hnsw_m`` links, ``ef_search`` candidates).
Geometry follows the run's evaluation: ``euclidean`` searches L2, ``cosine`` and ``dot`` inner
products; vectors are L2-normalized first for ``cosine`` or when ``eval.normalize`` is set.
Scores: euclidean -> L2 distance ``||q - g||``; cosine -> ``1 - cos(q, g)``; dot -> ``q . g``
(a similarity).

Files: ``NAME`` holds the faiss bytes, ``NAME.json`` the metadata (format version, run path and
weights sha256, dim, count, geometry, parameters, gallery paths and labels, measured recall)
and the sha256 of ``NAME``: the index is deserialized only when its bytes match, so faiss only
ever reads files that dmlkit wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import faiss
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dmlkit.base.atomic_write import atomic_write_bytes
from dmlkit.errors import CheckpointError, ConfigError
from dmlkit.evaluation.knn import knn, l2_normalize
from dmlkit.serve.load import LoadedRun
from dmlkit.version import __version__

KINDS = ("flat", "ivf", "hnsw")
FORMAT = "dmlkit-index"
FORMAT_VERSION = 1
_FAISS_TYPES = {"flat": faiss.IndexFlat, "ivf": faiss.IndexIVFFlat, "hnsw": faiss.IndexHNSWFlat}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunRef(_Strict):
    """The run whose model embedded the gallery."""

    path: str
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")


class Recall(_Strict):
    """Mean recall@k of the index's neighbours against exact search, over ``queries`` vectors."""

    k: int = Field(ge=1)
    queries: int = Field(ge=1)
    recall_at_k: float = Field(ge=0.0, le=1.0)


class IndexMeta(_Strict):
    """The sidecar JSON of a gallery index."""

    format: Literal["dmlkit-index"] = FORMAT
    format_version: int = FORMAT_VERSION
    dmlkit_version: str = __version__
    kind: Literal["flat", "ivf", "hnsw"]
    params: dict[str, int] = Field(default_factory=dict)
    dim: int = Field(ge=1)
    count: int = Field(ge=1)
    distance: Literal["euclidean", "cosine", "dot"]
    normalize: bool
    index_sha256: str = ""
    run: RunRef
    root: str
    paths: list[str]
    labels: list[int] | None = None
    class_names: dict[int, str] = Field(default_factory=dict)
    recall: Recall | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IndexMeta:
        if len(self.paths) != self.count:
            raise ValueError(f"{len(self.paths)} paths for {self.count} vectors")
        if self.labels is not None and len(self.labels) != self.count:
            raise ValueError(f"{len(self.labels)} labels for {self.count} vectors")
        bad = next((p for p in self.paths
                    if PurePosixPath(p).is_absolute() or ".." in PurePosixPath(p).parts), None)
        if bad is not None:
            raise ValueError(f"gallery path {bad!r} leaves the gallery folder")
        return self



def faiss_metric(distance: str) -> int:
    """faiss metric of an evaluation distance: L2 for euclidean, inner product otherwise."""
    return faiss.METRIC_L2 if distance == "euclidean" else faiss.METRIC_INNER_PRODUCT


def default_nlist(n: int) -> int:
    """IVF cells: ``4 sqrt(n)``, at most ``n / 39`` (faiss wants >= 39 training points per cell).

    >>> default_nlist(100_000), default_nlist(1_000), default_nlist(10)
    (1265, 25, 1)
    """
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


def check_kind(kind: str) -> None:
    """ConfigError unless ``kind`` is one of `KINDS`."""
    if kind not in KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


def build_faiss_index(
    vectors: np.ndarray,
    metric: int,
    kind: str = "flat",
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 64,
) -> tuple[faiss.Index, dict[str, int]]:
    """A faiss index of ``vectors`` (float32 n x d) and its resolved parameters.

    IVF defaults: ``nlist = default_nlist(n)``, ``nprobe = max(1, nlist // 16)``.
    """
    n, d = vectors.shape
    check_kind(kind)
    given = {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m - 1,
             "ef_construction": ef_construction, "ef_search": ef_search}
    bad = next((k for k, v in given.items() if v is not None and v < 1), None)
    if bad is not None:
        raise ConfigError(f"{bad} is too small (nlist, nprobe, ef_* >= 1; hnsw_m >= 2)")
    if kind == "flat":
        index, params = faiss.index_factory(d, "Flat", metric), {}
    elif kind == "ivf":
        nlist = nlist or default_nlist(n)
        if nlist > n:
            raise ConfigError(f"nlist={nlist} exceeds the {n} gallery vectors")
        nprobe = min(nprobe or max(1, nlist // 16), nlist)
        index = faiss.index_factory(d, f"IVF{nlist},Flat", metric)
        index.train(vectors)
        params = {"nlist": nlist, "nprobe": nprobe}
    else:
        index = faiss.index_factory(d, f"HNSW{hnsw_m},Flat", metric)
        index.hnsw.efConstruction = ef_construction
        params = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
    _set_search_params(index, params)
    index.add(vectors)
    return index, params


def _set_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    if "nprobe" in params:
        index.nprobe = params["nprobe"]
    if "ef_search" in params:
        index.hnsw.efSearch = params["ef_search"]


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over rows of ``|A ∩ E| / k`` for neighbour ids A, E of shape (n, k).

    >>> recall_at_k(np.array([[1, 2], [3, -1]]), np.array([[2, 1], [3, 5]]))
    0.75
    """
    k = exact.shape[1]
    return float(((approx[:, :, None] == exact[:, None, :]).any(2).sum(1) / k).mean())


def recall_vs_exact(
    index: faiss.Index, vectors: np.ndarray, k: int = 10, queries: int = 1000, seed: int = 0
) -> Recall:
    """Recall@k of ``index`` against exact search, queried with a sample of its own vectors.

    `recall_at_k` of the index's k neighbours A against the exact ones E (`evaluation.knn`,
    same metric), over ``queries`` sampled vectors.
    """
    n = len(vectors)
    k = min(k, n)
    rows = np.random.default_rng(seed).choice(n, min(queries, n), replace=False)
    q = vectors[rows]
    _, approx = index.search(q, k)
    distance = "euclidean" if index.metric_type == faiss.METRIC_L2 else "dot"
    exact = knn(torch.from_numpy(q), torch.from_numpy(vectors), k, distance=distance).numpy()
    return Recall(k=k, queries=len(rows), recall_at_k=recall_at_k(approx, exact))


@dataclass(frozen=True)
class Hit:
    """One retrieved gallery item."""

    rank: int
    id: int
    path: str
    label: str | None
    score: float


@dataclass
class GalleryIndex:
    """A faiss index over gallery embeddings with its metadata (see the module doc)."""

    index: faiss.Index
    meta: IndexMeta

    @classmethod
    def build(
        cls,
        embeddings: torch.Tensor,
        paths: list[str],
        run: LoadedRun,
        root: str | Path,
        labels: np.ndarray | None = None,
        class_names: dict[int, str] | None = None,
        kind: str = "flat",
        **params: int | None,
    ) -> GalleryIndex:
        """Index ``embeddings`` of the images ``paths`` (relative to ``root``) made by ``run``.

        ``params``: nlist, nprobe (ivf); hnsw_m, ef_construction, ef_search (hnsw).
        """
        if embeddings.ndim != 2 or len(embeddings) == 0:
            raise ConfigError(f"cannot index embeddings of shape {tuple(embeddings.shape)}")
        ev = run.cfg.eval
        vectors = _as_vectors(embeddings, ev.normalize or ev.distance == "cosine")
        index, resolved = build_faiss_index(vectors, faiss_metric(ev.distance), kind, **params)
        meta = IndexMeta(
            kind=kind, params=resolved, dim=vectors.shape[1], count=len(vectors),
            distance=ev.distance, normalize=ev.normalize,
            run=RunRef(path=str(Path(run.path).resolve()), fingerprint=run.fingerprint),
            root=str(Path(root).resolve()), paths=paths,
            labels=None if labels is None else [int(x) for x in labels],
            class_names=class_names or {},
            recall=None if kind == "flat" else recall_vs_exact(index, vectors),
        )
        return cls(index, meta)

    @property
    def score_name(self) -> str:
        return "similarity" if self.meta.distance == "dot" else "distance"

    def check_run(self, run: LoadedRun) -> None:
        """CheckpointError unless ``run`` has the weights the gallery was embedded with."""
        if run.fingerprint != self.meta.run.fingerprint:
            raise CheckpointError(
                f"the index was built by the model {self.meta.run.fingerprint[:12]} "
                f"({self.meta.run.path}), but {run.path} has weights {run.fingerprint[:12]}; "
                "rebuild the index with this run (dmlkit index) or pass the index's run"
            )

    def search(self, queries: torch.Tensor, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each n x min(k, count), best first; ids of -1 mark missing results."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        scores, ids = self.index.search(_prepare(queries, self.meta), min(k, self.meta.count))
        if self.meta.distance == "euclidean":
            scores = np.sqrt(np.maximum(scores, 0.0))
        elif self.meta.distance == "cosine":
            scores = 1.0 - scores
        return scores, ids

    def hits(self, queries: torch.Tensor, k: int = 10) -> list[list[Hit]]:
        """The ranked gallery items of each query."""
        scores, ids = self.search(queries, k)
        m = self.meta
        out = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            row = []
            for rank, (s, i) in enumerate(zip(row_scores, row_ids, strict=True), 1):
                if i < 0:
                    break
                label = None if m.labels is None else m.class_names.get(m.labels[i],
                                                                        str(m.labels[i]))
                row.append(Hit(rank, int(i), m.paths[i], label, float(s)))
            out.append(row)
        return out

    def save(self, path: str | Path) -> None:
        """Write the faiss bytes to ``path`` and the metadata to ``path.json`` (atomically)."""
        path = Path(path)
        blob = faiss.serialize_index(self.index).tobytes()
        self.meta = self.meta.model_copy(
            update={"index_sha256": hashlib.sha256(blob).hexdigest()})
        atomic_write_bytes(path, blob)
        atomic_write_bytes(sidecar_path(path), self.meta.model_dump_json(indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> GalleryIndex:
        """A saved index; CheckpointError if a file is missing, altered, truncated or foreign."""
        path = Path(path)
        meta = read_meta(path)
        if not path.is_file():
            raise CheckpointError(f"index file {path} does not exist")
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta.index_sha256:
            raise CheckpointError(
                f"{path} does not match its sidecar {sidecar_path(path).name} (truncated, "
                "altered or from another build): rebuild it with dmlkit index"
            )
        try:
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except RuntimeError as e:
            raise CheckpointError(f"{path} is not a readable faiss index ({e})") from None
        if (not isinstance(index, _FAISS_TYPES[meta.kind]) or index.d != meta.dim
                or index.ntotal != meta.count or index.metric_type != faiss_metric(meta.distance)):
            raise CheckpointError(
                f"{path} holds a {type(index).__name__} of {index.ntotal} x {index.d}, but its "
                f"sidecar describes a {meta.kind} index of {meta.count} x {meta.dim}"
            )
        _set_search_params(index, meta.params)
        return cls(index, meta)


def sidecar_path(path: Path) -> Path:
    """``gallery.index`` -> ``gallery.index.json``."""
    return path.with_name(path.name + ".json")


def read_meta(path: Path) -> IndexMeta:
    """The validated sidecar of index ``path``."""
    side = sidecar_path(Path(path))
    if not side.is_file():
        raise CheckpointError(f"{side} does not exist: an index needs the sidecar dmlkit wrote")
    try:
        raw = json.loads(side.read_text())
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{side} is not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{side} is not a dmlkit index sidecar")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{side} has index format {raw.get('format_version')!r} (written by dmlkit "
            f"{raw.get('dmlkit_version')}); this dmlkit {__version__} reads format "
            f"{FORMAT_VERSION}: rebuild the index"
        )
    try:
        return IndexMeta.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        raise CheckpointError(f"{side}: '{key}': {e['msg']}") from None


def _as_vectors(x: torch.Tensor, normalize: bool) -> np.ndarray:
    """Float32 contiguous rows for faiss, L2-normalized if ``normalize``."""
    x = x.detach().float().cpu()
    return np.ascontiguousarray((l2_normalize(x) if normalize else x).numpy())


def _prepare(x: torch.Tensor, meta: IndexMeta) -> np.ndarray:
    """Query rows in the index's geometry; CheckpointError if the dimension differs."""
    if x.ndim != 2 or x.shape[1] != meta.dim:
        raise CheckpointError(
            f"embeddings of shape {tuple(x.shape)} do not fit an index of dimension {meta.dim} "
            "(another model?)"
        )
    return _as_vectors(x, meta.normalize or meta.distance == "cosine")
