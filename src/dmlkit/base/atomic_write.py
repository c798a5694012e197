"""Atomic file writes: a crash, a signal or a full disk leaves the previous file intact."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

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


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temp file in the same folder, fsynced and
    renamed onto ``path`` when the block ends without an exception (removed otherwise).

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
            yield f
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (`atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(data)
