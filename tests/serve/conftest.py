"""A tiny trained run and a folder of its training images as PNG files, shared by tests/serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmlkit import config
from dmlkit.data.digits import load_digits
from dmlkit.engine.train import train

PER_CLASS = 12


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """One epoch of digits-smoke (seconds)."""
    root = tmp_path_factory.mktemp("runs")
    cfg = config.load("digits-smoke", [
        f"run.root={root}", "run.name=r", "eval.nmi=false", "train.epochs=1",
        "data.val_fraction=0", "eval.evaluate_untrained=false",
    ])
    return train(cfg).path


@pytest.fixture(scope="session")
def digits_indices() -> np.ndarray:
    """Catalog positions of the first PER_CLASS digits of each class."""
    labels = load_digits().labels
    return np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in range(10)])


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory, digits_indices) -> Path:
    """``root/<digit>/<catalog position>.png``: grey 8x8 PNGs of the chosen digits."""
    root = tmp_path_factory.mktemp("digits_png")
    cat = load_digits()
    for i in digits_indices:
        path = root / str(cat.labels[i]) / f"{i:04d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(cat.images[i, :, :, 0]).save(path)
    return root
