"""`build_method`: the method named in the config, over a model and the training classes."""

from __future__ import annotations

import numpy as np

from dmlkit.config import Config
from dmlkit.errors import ConfigError
from dmlkit.methods.base import Method
from dmlkit.methods.metric import MetricMethod


def build_method(cfg: Config, classes: np.ndarray) -> Method:
    """The training method of ``cfg.method.name``."""
    m = cfg.method
    dim = cfg.model.head.dim
    if m.name == "metric":
        return MetricMethod(m.loss, classes, dim)
    raise ConfigError(f"method {m.name!r} is not available")
