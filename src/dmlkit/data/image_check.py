"""Checks that a catalog's image files exist and decode, before a run starts reading them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.errors import DataError


def default_workers() -> int:
    """Threads for file-bound work (PIL releases the GIL while decoding)."""
    return min(8, os.cpu_count() or 1)


def require_files(name: str, paths: Sequence[Path]) -> None:
    """Raise DataError naming the first listed image that is not a file (and how many are not)."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"{name}: {len(missing)} of {len(paths)} listed images are missing, "
            f"first: {missing[0]}"
        )


def image_problem(path: Path, decode: bool = False) -> str | None:
    """Why PIL cannot read ``path``, or None when it can.

    ``verify()`` parses the header (and checks PNG chunk checksums); ``decode`` also decodes the
    pixels (JPEG at reduced scale, which still reads all of the entropy-coded data), catching the
    truncated JPEGs that ``verify()`` passes.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        if decode:
            with Image.open(path) as im:
                im.draft(im.mode, (1, 1))
                im.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
        return f"{type(e).__name__}: {e}"
    return None


def check_images(
    catalog: Catalog,
    on_error: Literal["fail", "skip"] = "fail",
    decode: bool = False,
    workers: int | None = None,
) -> tuple[Catalog, int]:
    """Open every image file of ``catalog`` with PIL, in a thread pool.

    ``on_error="fail"`` raises DataError naming the first unreadable file (catalog order);
    ``"skip"`` drops the unreadable files and returns the smaller catalog with their count.
    In-memory catalogs are returned unchanged.
    """
    if on_error not in ("fail", "skip"):
        raise DataError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    if catalog.paths is None:
        return catalog, 0
    pool = ThreadPoolExecutor(workers or default_workers())
    try:
        problems = list(pool.map(partial(image_problem, decode=decode), catalog.paths))
    finally:  # on Ctrl-C, report at once: a file blocking a reader does not hold the interrupt
        pool.shutdown(wait=False, cancel_futures=True)
    bad = np.array([p is not None for p in problems], dtype=bool)
    if not bad.any():
        return catalog, 0
    if on_error == "fail":
        first = int(np.argmax(bad))
        raise DataError(
            f"{catalog.name}: unreadable image {catalog.paths[first]} ({problems[first]}); "
            f"{int(bad.sum())} of {len(bad)} bad, data.on_bad_image=skip drops them"
        )
    return catalog.subset(~bad), int(bad.sum())
