"""`train`: the path of one run, from a resolved config to a filled run directory."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from dmlkit.base import process_group
from dmlkit.base.files import first_line
from dmlkit.base.progress import phase
from dmlkit.base.run_dir import STATE_FILE, RunDir, RunState
from dmlkit.config import Config
from dmlkit.data.build import DataBundle, build_data
from dmlkit.engine import distributed
from dmlkit.engine.feature_cache import use_feature_cache
from dmlkit.engine.interrupt import TrainingInterrupted
from dmlkit.engine.preflight import check_new_run, resumed_config
from dmlkit.engine.seed import resolve_device, seed_everything
from dmlkit.engine.trainer import Trainer
from dmlkit.engine.trainer_checkpoints import EditedConfig
from dmlkit.errors import CheckpointError, ConfigError
from dmlkit.methods.base import Method
from dmlkit.methods.build import build_method
from dmlkit.models.embedding_model import EmbeddingModel, build_model
from dmlkit.models.run_model import method_heads


def train(cfg: Config | None, resume: Path | None = None, console: Console | None = None,
          notify: Callable[[str], None] | None = None, force: bool = False) -> RunDir:
    """config -> data -> model -> method -> Trainer.fit -> run directory.

    With ``resume`` training continues from the run's newest complete checkpoint (mid-epoch
    ones included), exactly where it stopped, with ``cfg`` from `resumed_config` (None: the
    run's own config); the number of ranks may differ from the run's (the state is global,
    not per rank). A run still marked ``running`` is refused, except, with ``force``, one
    recorded by a process on another host (`RunState.elsewhere`: whether it lives cannot be
    seen from here; the user says it is gone).

    ``notify(line)`` (rank 0) hears the run directory as soon as it is created. Its state
    (`RunDir.state`) kept: ``running``, then ``finished``, ``interrupted`` (a signal, also
    outside the training loop: `TrainingInterrupted` naming the resume command) or
    ``failed``.

    Started by torchrun (``WORLD_SIZE`` > 1), the process joins the group (NCCL on CUDA, gloo
    on CPU) and trains its share of every global batch; rank 0 creates the run directory.

    The checks of the config (`check_new_run`) and of the data (building the batch samplers)
    run before the run directory is created: a run that cannot train leaves none behind.
    """
    if resume is not None:
        cfg = cfg or resumed_config(Path(resume))
    elif cfg is None:
        raise ConfigError("train needs a config or a run directory to resume")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    check_new_run(cfg, world_size)
    check_ranks(cfg, world_size)
    if process_group.launched():
        place, device = distributed.init_from_env(cfg.train.device)
    else:
        place, device = process_group.info(), resolve_device(cfg.train.device)
    data, method, model = build_components(cfg)
    method.batch_samplers(data.splits.train.labels, cfg.train)  # checks the data; nothing kept
    if resume is None:
        created = str(RunDir.create(cfg).path) if place.is_main else None
        run = RunDir(Path(process_group.broadcast_object(created)))
        wanted = Path(cfg.run.root) / cfg.run.name if cfg.run.name else run.path
        taken = "" if wanted == run.path else f" ({wanted} exists: {RunDir(wanted).state().state})"
        if notify is not None and place.is_main:
            notify(f"run directory: {run.path}{taken}")
    else:
        run = RunDir(Path(resume))
        now = process_group.broadcast_object(run.state() if place.is_main else None)
        if now.state == "running" and not (force and now.elsewhere):
            raise CheckpointError(busy(run, now))
        if place.is_main:
            if cfg != run.read_config():
                run.write_config(cfg)
            run.set_state("running")
    try:
        trainer = Trainer(cfg, data, model, method, run, device, console)
        if resume is not None:
            trainer.resume()
        trainer.fit()
    except TrainingInterrupted as e:
        _mark(run, place.is_main, "interrupted", str(e), after=e)
        raise
    except EditedConfig as e:  # refused before any training: the run stays as it was
        _mark(run, place.is_main, now.state, now.message, after=e)
        raise
    except KeyboardInterrupt:  # outside the training loop's own stop handling
        message = (f"stopped by SIGINT before the end of {run.path}; continue with: "
                   f"dmlkit train --resume {run.path}")
        stopped = TrainingInterrupted(message, signal.SIGINT)
        _mark(run, place.is_main, "interrupted", message, after=stopped)
        raise stopped from None
    except BaseException as e:
        _mark(run, place.is_main, "failed", first_line(e), after=e)
        raise
    _mark(run, place.is_main, "finished")
    return run


def busy(run: RunDir, now: RunState) -> str:
    """Why a ``running`` run cannot be resumed (one line), with the way out if there is one."""
    who = now.message or "see its state.json"
    if now.elsewhere:
        return (f"{run.path} is marked running ({who}), on another host: if that process is "
                f"gone, continue it with dmlkit train --resume {run.path} --force")
    return f"{run.path} is being trained by another process ({who})"


def check_ranks(cfg: Config, world_size: int) -> None:
    """Refuse what would silently go wrong on ``world_size`` ranks (called before launching
    them): BatchNorm without SyncBatchNorm on several CUDA ranks keeps per-rank statistics,
    of which only rank 0's are saved."""
    cuda = resolve_device(cfg.train.device).type == "cuda"
    frozen = cfg.model.freeze_bn or cfg.model.freeze_backbone
    if world_size > 1 and cuda and not cfg.train.sync_bn and not frozen:
        raise ConfigError(
            f"train.sync_bn=false on {world_size} CUDA ranks: each rank would keep its own "
            "BatchNorm statistics and only rank 0's are saved; set train.sync_bn=true or "
            "model.freeze_bn=true"
        )


def _mark(run: RunDir, is_main: bool, state, message: str = "",
          after: BaseException | None = None) -> None:
    """Record the run's state (rank 0 writes). ``after``: the error that ends the run; if the
    state cannot be written (e.g. a full disk), that error stays the one raised, and a line on
    stderr says why state.json was not updated."""
    if not is_main:
        return
    try:
        run.set_state(state, message)
    except OSError as e:
        if after is None:
            raise
        why = (f"{run.path / STATE_FILE} still says running: cannot record '{state}' "
               f"({first_line(e)})")
        after.add_note(why)
        print(f"warning: {why}", file=sys.stderr)


def build_components(cfg: Config) -> tuple[DataBundle, Method, EmbeddingModel]:
    """Data, method and model of ``cfg`` as every run starts: seeded, the model at its
    initial weights (the same RNG draws in the same order, so the same weights). With
    ``model.freeze_backbone`` the data are the backbone's cached features (`use_feature_cache`)."""
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed, cfg.train.deterministic, device)
    with phase(f"loading data ({cfg.data.name})"):
        data = build_data(cfg.data, cfg.train.seed, cfg.run.cache_path / "images")
    with phase(f"building the model ({cfg.model.backbone})"):
        method = build_method(cfg, data.splits.train.classes)
        model = build_model(cfg.model, data.in_channels, **method_heads(cfg))
    if cfg.model.freeze_backbone:
        data = use_feature_cache(cfg, data, model, device)
    return data, method, model
