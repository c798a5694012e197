"""`file_stats`: what keys a derived cache (decoded images, backbone features, Guided DML's
master and targets) to the content of the files it was made from, without reading them.

A file's (path, size, mtime_ns, inode): writing new bytes into it changes its modification
time; replacing it (another file moved or copied over the name, ``rsync``, a re-extracted
archive, ``cp -p`` keeping the old time) gives a new inode. Either gives the cache another key,
so it is rebuilt, never read stale. What it cannot see: bytes changed in place with the
modification time set back by hand. Moving a dataset (other paths or inodes) rebuilds its
caches once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def file_stats(paths: Sequence[str | Path]) -> list[list]:
    """``[path, size, mtime_ns, inode]`` of each file, in order."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([str(p), st.st_size, st.st_mtime_ns, st.st_ino])
    return out
