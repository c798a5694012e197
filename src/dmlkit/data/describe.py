"""`describe_catalog`: counts of a catalog plus image size statistics (``dmlkit datasets``)."""

from __future__ import annotations

import numpy as np

from dmlkit.data.catalog import Catalog
from dmlkit.errors import DataError


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}


def image_stats(catalog: Catalog, sample_images: int = 200, seed: int = 0) -> dict:
    """Width and height (min / median / max) and modes of the images.

    In-memory images share one shape; files are read (headers only) for a seeded sample of
    ``sample_images`` of them; unreadable files and files over the pixel limit (`open_image`)
    are counted and listed (``unreadable_files``: a line naming each).
    """
    if catalog.images is not None:
        n, h, w, c = catalog.images.shape
        return {
            "sampled": n,
            "width": _stats(np.array([w])),
            "height": _stats(np.array([h])),
            "modes": {"L" if c == 1 else "RGB" if c == 3 else f"{c} channels": n},
        }
    from dmlkit.data.image_open import open_image

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(catalog))[: max(0, sample_images)])
    sizes, modes, unreadable = [], {}, []
    for i in pick:
        try:
            with open_image(catalog.paths[i]) as im:
                sizes.append(im.size)
                modes[im.mode] = modes.get(im.mode, 0) + 1
        except DataError as e:  # names the file
            unreadable.append(str(e).splitlines()[0])
    out: dict = {"sampled": len(pick), "unreadable": len(unreadable),
                 "unreadable_files": unreadable, "modes": modes}
    if sizes:
        wh = np.array(sizes)
        out["width"], out["height"] = _stats(wh[:, 0]), _stats(wh[:, 1])
    return out


def describe_catalog(catalog: Catalog, sample_images: int = 200, seed: int = 0) -> dict:
    """Classes, images per split, query/gallery counts, super-classes, boxes and image sizes.

    >>> from dmlkit.data.digits import load_digits
    >>> d = describe_catalog(load_digits())
    >>> d["classes"], d["train"]["images"] + d["test"]["images"], d["image_stats"]["width"]
    (10, 1797, {'min': 8, 'median': 8.0, 'max': 8})
    """
    out = catalog.describe()
    if catalog.super_labels is not None:
        out["super_classes"] = len(np.unique(catalog.super_labels))
    out["bboxes"] = catalog.bboxes is not None
    out["image_stats"] = image_stats(catalog, sample_images, seed)
    return out
