"""Model weights as safetensors files: written atomically (`dmlkit.base.atomic_write`), read
without unpickling."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from dmlkit.base.atomic_write import atomic_write_bytes
from dmlkit.errors import CheckpointError


def save_weights(module_state: dict[str, torch.Tensor], path: Path) -> str:
    """Model weights as a safetensors file (written atomically); returns the file's sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in module_state.items()}
    blob = save(tensors)
    atomic_write_bytes(path, blob)
    return hashlib.sha256(blob).hexdigest()


def first_line(err: BaseException) -> str:
    """An exception's message reduced to its first line (for one-line errors)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file; CheckpointError if missing or truncated."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({first_line(e)})"
        ) from None
