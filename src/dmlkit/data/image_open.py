"""`open_image`: an image file opened with PIL, its pixel count checked from the header before
anything is decoded.

The limit is PIL's ``Image.MAX_IMAGE_PIXELS`` (89,478,485 pixels by default), read at every call:
a Python caller with larger images raises it (None: no limit). PIL alone only warns between one
and two times that limit (and decodes: a 12000 x 12000 image is 432 MB of RGB per copy) and
raises ``DecompressionBombError`` above; here any image over it is a one-line `DataError` naming
the file. Every reader of image files (training, caches, ``embed``, ``index``, ``search``,
``datasets --describe``) opens them through this.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from dmlkit.errors import DataError


def pixel_problem(path: Path, size: tuple[int, int]) -> str | None:
    """Why an image of ``size`` (width, height) at ``path`` is refused (a line naming it), or
    None."""
    limit = Image.MAX_IMAGE_PIXELS
    w, h = size
    if limit is None or w * h <= limit:
        return None
    return (f"image {path} is {w}x{h} ({w * h:,} pixels), over the limit of {limit:,} "
            "(PIL.Image.MAX_IMAGE_PIXELS): shrink it or leave it out")


def bomb_problem(path: Path, error: Exception) -> str:
    """The line for PIL's own refusal (``DecompressionBombError``: over twice its limit)."""
    return f"image {path} is over the pixel limit ({error})"


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """The PIL image of file ``path`` (header read, pixels not yet decoded), closed after the
    block. DataError (one line, naming the file) if it cannot be opened, is over the pixel
    limit, or fails to decode inside the block (OSError, ValueError)."""
    path = Path(path)
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise DataError(bomb_problem(path, e)) from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None
    with im:
        problem = pixel_problem(path, im.size)
        if problem is not None:
            raise DataError(problem)
        try:
            yield im
        except (OSError, ValueError) as e:
            raise DataError(f"cannot decode image {path}: {e}") from None
