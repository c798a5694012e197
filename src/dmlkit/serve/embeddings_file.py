"""Embedding files: ``.safetensors`` or ``.npz``, read without unpickling.

Contents: ``embeddings`` (float32 N x d), optional ``labels`` (int64 N), the images' paths
(relative to the embedded folder) and a metadata dict (run, fingerprint, dmlkit version, ...).
In ``.safetensors`` the paths and metadata are JSON strings in the header metadata
(``paths``, ``meta``); in ``.npz`` they are a unicode array ``paths`` and a 0-d JSON string
``meta``, loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from tokenize import TokenError

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from dmlkit.base.atomic_write import atomic_write_bytes
from dmlkit.errors import DataError

SUFFIXES = (".safetensors", ".npz")


@dataclass(frozen=True)
class EmbeddingsFile:
    """Embeddings of N images with their labels (or None), relative paths and metadata."""

    embeddings: torch.Tensor
    paths: list[str]
    labels: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        e, n = self.embeddings, len(self.paths)
        if e.ndim != 2 or not e.is_floating_point():
            raise DataError(f"embeddings must be a float N x d matrix, got {e.dtype} {e.shape}")
        if len(e) != n:
            raise DataError(f"{len(e)} embeddings but {n} paths")
        if self.labels is not None and tuple(self.labels.shape) != (n,):
            raise DataError(f"{n} embeddings but labels of shape {tuple(self.labels.shape)}")
        if not all(isinstance(p, str) for p in self.paths) or not isinstance(self.meta, dict):
            raise DataError("paths must be strings and meta a mapping")

    def save(self, path: str | Path) -> None:
        """Write to ``path`` (format from its suffix), atomically."""
        path = Path(path)
        check_suffix(path)
        emb = self.embeddings.float().contiguous()
        if path.suffix == ".safetensors":
            tensors = {"embeddings": emb}
            if self.labels is not None:
                tensors["labels"] = self.labels.long().contiguous()
            header = {"paths": json.dumps(self.paths), "meta": json.dumps(self.meta)}
            blob = save(tensors, metadata=header)
        else:
            arrays = {"embeddings": emb.numpy(), "paths": np.array(self.paths, dtype=str),
                      "meta": np.array(json.dumps(self.meta))}
            if self.labels is not None:
                arrays["labels"] = self.labels.long().numpy()
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            blob = buf.getvalue()
        atomic_write_bytes(path, blob)


def check_suffix(path: Path) -> None:
    """DataError unless ``path`` names a supported embeddings format."""
    if Path(path).suffix not in SUFFIXES:
        raise DataError(f"embeddings file {path}: the suffix must be one of {', '.join(SUFFIXES)}")


def _read_safetensors(path: Path) -> tuple[dict, list[str], dict]:
    with safe_open(str(path), "pt") as f:
        header = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    return tensors, json.loads(header["paths"]), json.loads(header.get("meta", "{}"))


def _read_npz(path: Path) -> tuple[dict, list[str], dict]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: torch.from_numpy(z[k]) for k in ("embeddings", "labels") if k in z}
        return arrays, [str(p) for p in z["paths"]], json.loads(str(z["meta"]))


def load_embeddings_file(path: str | Path) -> EmbeddingsFile:
    """An embeddings file written by `EmbeddingsFile.save`; DataError if missing or malformed."""
    path = Path(path)
    check_suffix(path)
    if not path.is_file():
        raise DataError(f"embeddings file {path} does not exist")
    read = _read_safetensors if path.suffix == ".safetensors" else _read_npz
    try:
        tensors, paths, meta = read(path)
        return EmbeddingsFile(tensors["embeddings"], paths, tensors.get("labels"), meta)
    except (DataError, SafetensorError, OSError, EOFError, ValueError, KeyError, TypeError,
            SyntaxError, TokenError, MemoryError, RecursionError, zipfile.BadZipFile) as e:
        # Syntax/TokenError: a damaged .npy header in the .npz; RecursionError: nested JSON
        raise DataError(f"{path} is not a readable dmlkit embeddings file ({e})") from None
