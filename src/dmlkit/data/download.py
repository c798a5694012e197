"""Fetching official dataset files (checksums verified) and extracting archives safely."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from dmlkit.errors import DataError


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, md5: str | None = None, sha256: str | None = None) -> Path:
    """Download ``url`` to ``dest`` (atomically) unless a file with the right checksum is there.

    Raises DataError when the download fails or the checksum does not match.
    """
    dest = Path(dest)
    expected = [(a, v) for a, v in (("md5", md5), ("sha256", sha256)) if v]

    def ok(p: Path) -> bool:
        return p.is_file() and all(file_digest(p, a) == v for a, v in expected)

    if ok(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {e}") from e
    if not ok(Path(tmp)):
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {url} (expected {dict(expected)})")
    os.replace(tmp, dest)
    return dest


def _check_member(name: str, target: Path) -> Path:
    out = (target / name).resolve()
    if not out.is_relative_to(target.resolve()):
        raise DataError(f"archive member {name!r} would be written outside {target}")
    return out


def _regular_members_only(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's ``"data"`` filter (no absolute paths, nothing outside ``dest``, no devices),
    refusing links as well."""
    if not (member.isfile() or member.isdir()):
        raise tarfile.FilterError(f"archive member {member.name!r} is a link or special file")
    return tarfile.data_filter(member, dest)


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a .tar(.gz/.bz2/.xz) or .zip into ``target``.

    Refuses members that escape ``target`` (``..``) and any symbolic or hard link, device or
    fifo (a tar can otherwise write anywhere on disk); tars go through tarfile's ``"data"``
    filter (absolute names are made relative to ``target``), every member checked before
    anything is written.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                _check_member(info.filename, target)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DataError(f"archive member {info.filename!r} is a symbolic link")
            z.extractall(target)
        return
    try:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():  # every member checked before anything is written
                _regular_members_only(member, str(target))
            tf.extractall(target, filter=_regular_members_only)
    except tarfile.FilterError as e:
        raise DataError(f"{archive}: {e}") from None
    except tarfile.TarError as e:
        raise DataError(f"{archive} is not a readable tar or zip archive: {e}") from e
