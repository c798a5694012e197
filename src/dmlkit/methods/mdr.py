"""MDR as a method: the metric method with ``MDRRegularizer`` in the same step.

Total loss per step: ``L_metric + lambda * L_MDR + nu * sum_k s_k^2``. The regularizer's own
penalty is multiplied by lambda in the step, so it is built with ``nu / lambda``.
"""

from __future__ import annotations

import numpy as np

from dmlkit.config import MethodConfig
from dmlkit.losses.mdr import MDRRegularizer
from dmlkit.methods.metric import MetricMethod


def build_mdr_method(cfg: MethodConfig, classes: np.ndarray, embedding_dim: int) -> MetricMethod:
    """Metric loss + lambda * MDR (levels in the optimizer, statistics in the state)."""
    m = cfg.mdr
    regularizer = MDRRegularizer(
        levels=m.levels,
        nu=m.nu / m.weight if m.weight > 0 else 0.0,
        momentum=m.momentum,
        include_diagonal=m.include_diagonal,
    )
    return MetricMethod(cfg.loss, classes, embedding_dim, regularizer, m.weight)
