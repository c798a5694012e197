"""Atomic and safe file IO: writes that leave the previous file intact on a crash, a signal or
a full disk; model weights as safetensors (no unpickling)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from dmlkit.errors import CheckpointError


class WriteError(CheckpointError, OSError):
    """A file could not be written (full disk, no permission); the previous file is intact.

    Also an OSError, so callers that tolerate failed writes (caches) keep working.
    """


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, then rename.

    A crash, a signal or a full disk leaves the previous file intact; an OSError is raised as
    `WriteError` naming the file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)  # mkstemp creates 0600: the usual file mode
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            err = WriteError(f"cannot write {path}: {e.strerror or e}")
            err.errno = e.errno
            raise err from e
        raise
    _fsync_dir(path.parent)


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
