"""`load_embeddings`: read saved embeddings and labels for evaluation, validated, never unpickled.

Formats, by extension:
- ``.npz`` / ``.safetensors``: arrays "embeddings" (n x d) and "labels" (n), optional bool
  arrays "query_mask", "is_query", "is_gallery" (returned in ``extra``).
- ``.npy``: the embedding matrix alone; labels come from ``labels_path`` (``.npy`` or a text file
  with one integer per line).
- ``.csv``: without a header, the label column then the embedding columns; with a header, the
  column named "label", optional "query_mask" / "is_query" / "is_gallery" columns, and every
  other column is an embedding dimension.

Labels come back as int64, exactly: text labels are parsed as integers (never through float64,
which would merge 9007199254740992 and 9007199254740993); labels int64 cannot hold (integers
beyond it such as 1e19, or text labels in a CSV with a header) make each distinct label a class,
numbered in sorted order (`exact_labels`, `as_int64`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from tokenize import TokenError

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from dmlkit.errors import EvaluationError

FLAG_KEYS = ("query_mask", "is_query", "is_gallery")


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


INT64 = (-(2**63), 2**63)  # [low, high)


def _integer(cell: str) -> int:
    """The exact integer a label cell holds (``3``, ``3.0``, ``1e3``); ValueError for text."""
    try:
        return int(cell)
    except ValueError:
        value = float(cell)
        if not value.is_integer():  # 1.5, nan, inf
            raise EvaluationError(f"labels must be integers, not {cell!r}") from None
        return int(value)


def exact_labels(cells: np.ndarray) -> np.ndarray:
    """Label cells (text) as int64, exactly: integers keep their values when int64 holds them
    all (never through float64, which merges 2^53 and 2^53 + 1); else each distinct label is a
    class, numbered in sorted order (integers beyond int64, or text labels)."""
    cells = np.char.strip(np.asarray(cells, dtype=str))
    try:
        values = [_integer(c) for c in cells]
    except ValueError:  # text: a class per distinct string
        return np.unique(cells, return_inverse=True)[1].astype(np.int64)
    if all(INT64[0] <= v < INT64[1] for v in values):
        return np.array(values, dtype=np.int64)
    return np.unique(np.array(values, dtype=object), return_inverse=True)[1].astype(np.int64)


def as_int64(labels: np.ndarray) -> np.ndarray:
    """Numeric labels as int64 without a lossy cast: values int64 cannot hold (uint64 above
    2^63, floats of 2^63 and more) make each distinct label a class, numbered in sorted order."""
    if labels.size and labels.dtype.kind in "uf" and not (
            (labels >= INT64[0]) & (labels < INT64[1])).all():
        return np.unique(labels, return_inverse=True)[1].astype(np.int64)
    return labels.astype(np.int64)


def _text_labels(path: Path) -> np.ndarray:
    cells = np.loadtxt(path, dtype=str, ndmin=1, delimiter=",")
    if cells.ndim != 1:
        raise EvaluationError(f"{path}: one label per line, not {cells.shape[1]} "
                              "comma-separated columns")
    return exact_labels(cells)


def _npy(path: Path, labels_path: Path | None) -> dict[str, np.ndarray]:
    if labels_path is None:
        raise EvaluationError(f"{path} holds only embeddings: give the labels file as well")
    labels_path = Path(labels_path)
    if not labels_path.is_file():
        raise EvaluationError(f"labels file not found: {labels_path}")
    labels = (
        np.load(labels_path, allow_pickle=False)
        if labels_path.suffix == ".npy"
        else _text_labels(labels_path)
    )
    return {"embeddings": np.load(path, allow_pickle=False), "labels": labels}


def _csv(path: Path) -> dict[str, np.ndarray]:
    with open(path) as fh:
        first = fh.readline().strip().split(",")
    try:
        [float(cell) for cell in first]
        header = None
    except ValueError:
        header = [cell.strip() for cell in first]
    if header is not None and "label" not in header:
        raise EvaluationError(f"{path}: the header has no 'label' column")
    at = 0 if header is None else header.index("label")
    skip = int(header is not None)
    labels = exact_labels(np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=1, dtype=str,
                                     usecols=at))
    table = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2,
                       converters={at: lambda _: 0.0})  # the labels: read exactly above
    if header is None:
        return {"labels": labels, "embeddings": table[:, 1:]}
    if len(header) != table.shape[1]:
        raise EvaluationError(f"{path}: {len(header)} header names but {table.shape[1]} columns")
    columns = {name: table[:, i] for i, name in enumerate(header)}
    dims = [i for i, name in enumerate(header) if name != "label" and name not in FLAG_KEYS]
    arrays = {name: columns[name] for name in FLAG_KEYS if name in columns}
    arrays["labels"] = labels
    arrays["embeddings"] = table[:, dims]
    return arrays


def _validated(
    arrays: dict[str, np.ndarray], path: Path
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    missing = [key for key in ("embeddings", "labels") if key not in arrays]
    if missing:
        raise EvaluationError(f"{path}: missing {missing}; found {sorted(arrays)}")
    emb, labels = np.asarray(arrays["embeddings"]), np.asarray(arrays["labels"])
    if emb.dtype.kind not in "iuf" or labels.dtype.kind not in "iufb":
        raise EvaluationError(f"{path}: embeddings and labels must be numeric")
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise EvaluationError(
            f"{path}: embeddings must be a non-empty n x d matrix, not {emb.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(emb):
        raise EvaluationError(f"{path}: {len(emb)} embeddings but labels of shape {labels.shape}")
    with np.errstate(over="ignore"):
        emb = emb.astype(np.float32)
    if not np.isfinite(emb).all():
        raise EvaluationError(f"{path}: embeddings contain NaN or infinite values (as float32)")
    if labels.dtype.kind == "f" and not (np.isfinite(labels).all() and (labels % 1 == 0).all()):
        raise EvaluationError(f"{path}: labels must be integers")
    extra = {}
    for key in FLAG_KEYS:
        if key in arrays:
            flag = np.asarray(arrays[key])
            if flag.shape != labels.shape or not np.isin(flag, (0, 1)).all():
                raise EvaluationError(f"{path}: {key} must be {len(labels)} booleans (0/1)")
            extra[key] = flag.astype(bool)
    return emb, as_int64(labels), extra


def load_embeddings(
    path: str | Path, labels_path: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Read ``(embeddings float32 n x d, labels int64 n, extra flags)`` from a file (see module).

    Raises EvaluationError on a missing file or key, mismatched lengths, non-numeric or
    non-finite data. ``.npy``/``.npz`` files are read with ``allow_pickle=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"embeddings file not found: {path}")
    readers = {
        ".npz": lambda: _npz(path),
        ".safetensors": lambda: load_file(path),
        ".npy": lambda: _npy(path, None if labels_path is None else Path(labels_path)),
        ".csv": lambda: _csv(path),
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise EvaluationError(f"{path}: unsupported format; use one of {', '.join(readers)}")
    if labels_path is not None and path.suffix.lower() != ".npy":
        raise EvaluationError(f"{path}: a separate labels file is only used with .npy")
    try:
        arrays = reader()
    except (ValueError, OSError, EOFError, SyntaxError, TokenError, MemoryError,
            zipfile.BadZipFile, SafetensorError) as err:  # Syntax/TokenError: a damaged .npy header
        raise EvaluationError(f"{path}: cannot read ({err})") from None
    return _validated(arrays, path)
