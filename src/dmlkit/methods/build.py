"""`build_method`: the configured composition of a metric loss and parts, over the training
classes."""

from __future__ import annotations

import numpy as np

from dmlkit.config import Config
from dmlkit.methods.base import Method
from dmlkit.methods.composed import ComposedMethod


def build_method(cfg: Config, classes: np.ndarray) -> Method:
    """The `ComposedMethod` of ``cfg.method`` (base loss + its parts)."""
    return ComposedMethod(cfg.method, classes, cfg.model.head.dim, cfg.train.seed,
                          cfg.train.batch_size, cfg.run.cache_path)
