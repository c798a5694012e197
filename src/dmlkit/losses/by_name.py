"""pytorch-metric-learning losses, miners and distances by class name.

``num_classes`` and ``embedding_size`` are filled in automatically for losses that take them
(proxies, per-class margins); their parameters are then collected by the method into the
optimizer (``loss.parameters()``). Miner names starting with ``dmlkit:`` are dmlkit's own
(``dmlkit:DistanceWeightedMiner``: one negative per anchor-positive pair or per anchor, with
per-anchor normalization; see ``dmlkit.miners.distance_weighted``). PML's reducers and miners
that read the device are swapped for `dmlkit.losses.sync_free`'s equivalents.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from pytorch_metric_learning import distances, losses, miners, reducers
from torch import nn

from dmlkit.config import LossConfig
from dmlkit.errors import ConfigError
from dmlkit.losses.sync_free import sync_free
from dmlkit.miners.distance_weighted import DistanceWeightedMiner


def _public(module) -> dict[str, type]:
    return {n: c for n, c in vars(module).items() if inspect.isclass(c) and not n.startswith("_")}


LOSSES, MINERS, DISTANCES = _public(losses), _public(miners), _public(distances)
REDUCERS = _public(reducers)
DMLKIT_MINERS = {"DistanceWeightedMiner": DistanceWeightedMiner}


def _close_names(name: str, table: dict[str, type]) -> list[str]:
    """Names of ``table`` near ``name``: similar spelling or the same first 4 letters (any case)."""
    lower = {n.lower(): n for n in table}
    close = [lower[n] for n in difflib.get_close_matches(name.lower(), lower, n=3, cutoff=0.7)]
    prefix = name.lower()[:4]
    close += [n for n in table if len(prefix) == 4 and n.lower().startswith(prefix)]
    return list(dict.fromkeys(close))[:5]


def _instantiate(kind: str, table: dict[str, type], name: str, params: dict[str, Any]):
    if name not in table:
        close = _close_names(name, table)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown {kind} {name!r}{hint}")
    try:
        return table[name](**params)
    except (TypeError, ValueError, AssertionError) as e:  # PML checks its arguments this way
        raise ConfigError(f"{kind} {name}: {' '.join(str(e).split())}") from None


def build_distance(name: str | None, params: dict[str, Any]):
    """A PML distance object, or None for the loss's default."""
    return None if name is None else _instantiate("distance", DISTANCES, name, params)


def build_loss(cfg: LossConfig, num_classes: int, embedding_size: int) -> nn.Module:
    """A PML loss from its class name and parameters."""
    cls = LOSSES.get(cfg.name)
    params = dict(cfg.params)
    if cls is not None:
        sig = inspect.signature(cls.__init__).parameters
        if "num_classes" in sig and "num_classes" not in params:
            params["num_classes"] = num_classes
        if "embedding_size" in sig and "embedding_size" not in params:
            params["embedding_size"] = embedding_size
    distance = build_distance(cfg.distance, cfg.distance_params)
    if distance is not None:
        params["distance"] = distance
    if cfg.reducer is not None:
        params["reducer"] = _instantiate("reducer", REDUCERS, cfg.reducer, {})
    return sync_free(_instantiate("loss", LOSSES, cfg.name, params))


def build_miner(cfg: LossConfig):
    """The PML miner named in ``cfg`` (None when no miner)."""
    if cfg.miner is None:
        return None
    if cfg.miner.startswith("dmlkit:"):
        return _instantiate("miner", DMLKIT_MINERS, cfg.miner[7:], cfg.miner_params)
    params = dict(cfg.miner_params)
    distance = build_distance(cfg.distance, cfg.distance_params)
    if distance is not None and "distance" not in params:
        params["distance"] = distance
    return sync_free(_instantiate("miner", MINERS, cfg.miner, params))
