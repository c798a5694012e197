"""`train`: the path of one run, from a resolved config to a filled run directory."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from dmlkit import config as config_mod
from dmlkit.config import Config
from dmlkit.data.build import DataBundle, build_data
from dmlkit.engine import distributed
from dmlkit.engine.run_dir import RunDir
from dmlkit.engine.seed import resolve_device, seed_everything
from dmlkit.engine.trainer import Trainer
from dmlkit.errors import CheckpointError
from dmlkit.methods.base import Method
from dmlkit.methods.build import build_method
from dmlkit.models.embedding_model import EmbeddingModel, build_model
from dmlkit.progress import phase


def train(cfg: Config, resume: Path | None = None, console: Console | None = None) -> RunDir:
    """config -> data -> model -> method -> Trainer.fit -> run directory.

    With ``resume`` the run directory's own config is used and training continues from its
    newest complete checkpoint (mid-epoch ones included), exactly where it stopped; the number
    of ranks may differ from the run's (the state is global, not per rank).

    Started by torchrun (``WORLD_SIZE`` > 1), the process joins the group (NCCL on CUDA, gloo
    on CPU) and trains its share of every global batch; rank 0 creates the run directory.
    """
    if resume is not None:
        run = RunDir(Path(resume))
        if not run.config_path.is_file():
            raise CheckpointError(f"{resume} is not a run directory (no config.yaml)")
        cfg = config_mod.load(str(run.config_path))
    else:
        run = None
    if distributed.launched():
        place, device = distributed.init_from_env(cfg.train.device)
    else:
        place, device = distributed.info(), resolve_device(cfg.train.device)
    data, method, model = build_components(cfg)
    if run is None:
        created = str(RunDir.create(cfg).path) if place.is_main else None
        run = RunDir(Path(distributed.broadcast_object(created)))
    trainer = Trainer(cfg, data, model, method, run, device, console)
    if resume is not None:
        trainer.resume()
    trainer.fit()
    return run


def build_components(cfg: Config) -> tuple[DataBundle, Method, EmbeddingModel]:
    """Data, method and model of ``cfg`` as every run starts: seeded, the model at its
    initial weights (the same RNG draws in the same order, so the same weights)."""
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    with phase(f"loading data ({cfg.data.name})"):
        data = build_data(cfg.data, cfg.train.seed)
    with phase(f"building the model ({cfg.model.backbone})"):
        method = build_method(cfg, data.splits.train.classes)
        model = build_model(cfg.model, data.in_channels, **method_heads(cfg))
    return data, method, model


def method_heads(cfg: Config) -> dict:
    """Extra heads and the retrieval head(s) a method needs from the model."""
    if cfg.method.name == "sharing":
        s = cfg.method.sharing
        retrieval = "embedding" if s.retrieval == "class" else ["embedding", "shared"]
        return {"extra_heads": {"shared": s.shared_dim}, "retrieval": retrieval}
    return {}
