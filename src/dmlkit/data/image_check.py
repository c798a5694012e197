"""Checks that a catalog's image files exist and decode, before a run starts reading them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from dmlkit.data.catalog import Catalog
from dmlkit.data.image_open import bomb_problem, pixel_problem
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


def inspect_image(path: Path, decode: bool = False) -> tuple[str | None, tuple[int, int]]:
    """(why PIL cannot read ``path``, a line naming it, or None when it can; its (width,
    height) from the header, (0, 0) when the header is unreadable).

    ``verify()`` parses the header (and checks PNG chunk checksums); ``decode`` also decodes the
    pixels (JPEG at reduced scale, which still reads all of the entropy-coded data), catching the
    truncated JPEGs that ``verify()`` passes. An image over the pixel limit (`open_image`) is a
    problem, found from its header (nothing decoded).
    """
    size = (0, 0)
    try:
        with Image.open(path) as im:
            size = im.size
            too_large = pixel_problem(path, size)
            if too_large is not None:
                return too_large, size
            im.verify()
        if decode:
            with Image.open(path) as im:
                im.draft(im.mode, (1, 1))
                im.load()
    except Image.DecompressionBombError as e:
        return bomb_problem(path, e), size
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
        return f"unreadable image {path} ({type(e).__name__}: {e})", size
    return None, size


@dataclass
class CheckedImages:
    """What `check_images` found: the readable images, their sizes and the dropped files."""

    catalog: Catalog
    sizes: np.ndarray | None  # (width, height) of each image of catalog (None: in memory)
    skipped: list[str] = field(default_factory=list)  # why each dropped file was (its path)

    def summary(self) -> str:
        """One line: how many unreadable images were dropped, and the first."""
        total = len(self.catalog) + len(self.skipped)
        return (f"{self.catalog.name}: data.on_bad_image=skip dropped {len(self.skipped)} of "
                f"{total} images as unreadable, first: {self.skipped[0]}")


def check_images(
    catalog: Catalog,
    on_error: Literal["fail", "skip"] = "fail",
    decode: bool = False,
    workers: int | None = None,
) -> CheckedImages:
    """Open every image file of ``catalog`` with PIL, in a thread pool.

    ``on_error="fail"`` raises DataError naming the first unreadable file (catalog order);
    ``"skip"`` drops the unreadable files (``skipped`` lists them). In-memory catalogs are
    returned unchanged.
    """
    if on_error not in ("fail", "skip"):
        raise DataError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    if catalog.paths is None:
        return CheckedImages(catalog, None)
    pool = ThreadPoolExecutor(workers or default_workers())
    try:
        found = list(pool.map(partial(inspect_image, decode=decode), catalog.paths))
    finally:  # on Ctrl-C, report at once: a file blocking a reader does not hold the interrupt
        pool.shutdown(wait=False, cancel_futures=True)
    problems = [p for p, _ in found]
    sizes = np.array([s for _, s in found], dtype=np.int64).reshape(-1, 2)
    bad = np.array([p is not None for p in problems], dtype=bool)
    if not bad.any():
        return CheckedImages(catalog, sizes)
    if on_error == "fail":
        first = int(np.argmax(bad))
        raise DataError(
            f"{catalog.name}: {problems[first]}; "
            f"{int(bad.sum())} of {len(bad)} bad, data.on_bad_image=skip drops them"
        )
    skipped = [problems[i] for i in np.flatnonzero(bad)]
    return CheckedImages(catalog.subset(~bad), sizes[~bad], skipped)


def require_one_size(name: str, paths: Sequence[Path], sizes: np.ndarray) -> None:
    """DataError (one line) naming the first image whose (width, height) differs from the most
    common one: images of several sizes cannot be batched without a resize."""
    if len(sizes) == 0 or (sizes == sizes[0]).all():
        return
    values, counts = np.unique(sizes, axis=0, return_counts=True)
    common = values[int(np.argmax(counts))]
    odd = int(np.argmax((sizes != common).any(axis=1)))
    w, h = (int(v) for v in sizes[odd])
    raise DataError(
        f"{name}: image {paths[odd]} is {w}x{h} but {int(counts.max())} of {len(sizes)} are "
        f"{common[0]}x{common[1]}; images of several sizes need a resize: set "
        f"data.image_size (e.g. {min(common)}) or use a transform that crops to a fixed size"
    )
