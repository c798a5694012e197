"""`build_method`: the method named in the config, over the training classes."""

from __future__ import annotations

import numpy as np

from dmlkit.config import Config
from dmlkit.methods.base import Method
from dmlkit.methods.guided import GuidedMethod
from dmlkit.methods.mdr import build_mdr_method
from dmlkit.methods.metric import MetricMethod
from dmlkit.methods.sharing import SharingMethod


def build_method(cfg: Config, classes: np.ndarray) -> Method:
    """The training method of ``cfg.method.name`` (metric, mdr, sharing or guided)."""
    m, dim = cfg.method, cfg.model.head.dim
    if m.name == "mdr":
        return build_mdr_method(m, classes, dim)
    if m.name == "sharing":
        return SharingMethod(m.sharing, m.loss, classes, dim)
    if m.name == "guided":
        return GuidedMethod(m.guided, m.loss, classes, dim, cfg.train.seed, cfg.train.batch_size)
    return MetricMethod(m.loss, classes, dim)
