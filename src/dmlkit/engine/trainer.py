"""The training loop shared by every method: optimizer, schedule, validation, checkpoints.

Crash safety (docs/crash-safety.md): a checkpoint pair is written at every epoch end and every
``train.checkpoint_every`` iterations; it holds everything the loop depends on (weights,
optimizer, scheduler, method state, sampler position, RNG states, partial epoch sums), so a run
resumed from it continues exactly as if never stopped. SIGINT/SIGTERM finish the current
iteration, checkpoint and raise `TrainingInterrupted`.

Under torch.distributed (docs/distributed.md) every rank runs this loop on its slice of each
global batch; methods gather the slices, so every rank computes the same loss, and
`average_gradients` makes the step that of one process on the global batch. Rank 0 alone
writes (checkpoints, metrics, weights, report); evaluation embeds a block of samples per rank
and rank 0 computes the metrics, which every rank then receives (validation decisions agree).
"""

from __future__ import annotations

import csv
import io
import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader

from dmlkit.base import process_group
from dmlkit.base.atomic_write import WriteError, atomic_write_bytes
from dmlkit.base.files import first_line, save_weights
from dmlkit.base.progress import bar, live_bars, phase, plain
from dmlkit.base.run_dir import RunDir
from dmlkit.config import Config
from dmlkit.data.build import DataBundle, EvalData
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.device_batches import DeviceBatches
from dmlkit.data.seeded_batches import SeededBatches
from dmlkit.data.workers import loader_workers, prefetch_factor
from dmlkit.engine.checkpoint import CheckpointFolder
from dmlkit.engine.interrupt import StopOnSignal, TrainingInterrupted, ignore_sigint
from dmlkit.engine.precision import inference_view, training_view
from dmlkit.engine.run_report import write_run_report
from dmlkit.engine.seed import cuda_rng_state, rng_state, seed_everything, set_rng_state
from dmlkit.engine.tracking.tracker import Tracker
from dmlkit.errors import CheckpointError, ConfigError, DmlkitError, TrainingError
from dmlkit.evaluation import evaluate
from dmlkit.evaluation.extract import extract_sharded, shard_size
from dmlkit.methods.base import Method
from dmlkit.models.heads import NormalizedFeatures

PRIMARY = "map_at_r"
MAX_LISTED = 100  # skipped steps listed in metrics.json


def _drawn(iterators: list) -> Iterator[tuple]:
    """One batch of every stream per iteration. A DmlkitError raised in a DataLoader worker
    comes back with the worker's traceback prepended by torch: keep its own one-line message."""
    try:
        yield from zip(*iterators, strict=False)
    except DmlkitError as e:
        lines = str(e).strip().splitlines()
        if len(lines) > 1 and "DataLoader worker" in lines[0]:
            raise type(e)(lines[-1].split(": ", 1)[-1]) from None
        raise


def _empty_epoch() -> dict:
    """Running sums of the current epoch (saved in mid-epoch checkpoints)."""
    return {"sums": {}, "steps": 0, "images": 0, "skipped": 0, "overflows": 0, "seconds": 0.0}


def build_optimizer(cfg: Config, model: nn.Module, method: Method) -> torch.optim.Optimizer:
    """Model parameters plus the method's own groups (loss parameters, MDR levels, ...)."""
    o = cfg.optim
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "name": "model"}]
    groups += method.param_groups(o.lr, o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.RMSprop(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer):
    """Per-epoch schedule; multistep milestones are fractions of ``train.epochs``."""
    o, epochs = cfg.optim, max(cfg.train.epochs, 1)
    if o.schedule == "multistep":
        milestones = sorted({max(1, round(f * epochs)) for f in o.milestones})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, o.gamma)
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    if o.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=o.gamma, patience=o.plateau_patience
        )
    return None


def evaluation_device(device: torch.device) -> torch.device:
    """Where evaluation keeps the embeddings and ranks / clusters them: the training device
    when it is CUDA (the kNN's topk and the torch k-means run there), else the CPU (numpy
    selection, faiss k-means)."""
    return device if device.type == "cuda" else torch.device("cpu")


def evaluate_model(
    model: nn.Module, data: EvalData, cfg: Config, device: torch.device,
    describe: str | None = None,
) -> dict[str, float]:
    """Embed the query (and reference) set and compute every metric from one ranking.

    The forward runs as in training (`inference_view`: ``train.precision`` autocast,
    ``train.channels_last``), the embeddings stay on `evaluation_device`. Under
    torch.distributed each rank embeds a block of samples, rank 0 computes the metrics
    and every rank returns them. ``describe`` (e.g. "final evaluation") shows the evaluation on
    stderr: a bar over the embedded images, then the metric computation. Non-finite embeddings:
    TrainingError (the model diverged).
    """
    e, t = cfg.eval, cfg.train
    view = inference_view(model, t.precision, device, t.channels_last)
    out = evaluation_device(device)

    def batch(dataset) -> int:  # eval.batch_divisor: Guided DML's official len(dataset) // 30
        return max(1, len(dataset) // e.batch_divisor) if e.batch_divisor else e.batch_size

    sets = [data.query] if data.reference is None else [data.query, data.reference]
    show = describe is not None
    total = sum(shard_size(len(s)) for s in sets)
    with bar(f"{describe}: embedding", total, show) as advance:
        (q, ql), *ref = [extract_sharded(view, s, batch(s), device, cfg.data.num_workers,
                                         e.bn_train_mode, advance, out) for s in sets]
    r, rl = ref[0] if ref else (None, None)
    if not all(bool(torch.isfinite(x).all()) for x in (q, r) if x is not None):
        raise TrainingError("the model diverged: its embeddings are not finite (NaN or "
                            "infinite); lower optim.lr (train.skip_nonfinite skips bad steps "
                            "but cannot undo a diverged model)")
    metrics = ["precision_at_1", "recall_at_k", "r_precision", "map_at_r"]
    if e.nmi:
        metrics += ["nmi", "ami"]
    if e.classification:
        metrics.append("nn_classification")
    result = None
    if process_group.info().is_main:
        with phase(f"{describe}: metrics", show):
            result = evaluate(q, ql, r, rl, recall_ks=tuple(e.recall_ks), metrics=metrics,
                              distance=e.distance, normalize=e.normalize,
                              kmeans_seed=e.kmeans_seed,
                              kmeans_max_points_per_centroid=e.kmeans_max_points_per_centroid)
    return process_group.broadcast_object(result)


class Trainer:
    """Runs ``method`` on ``model`` over ``data``, writing everything into ``run``.

    Position: ``epoch`` epochs done, plus ``batch`` batches of the next one; ``iteration``
    counts batches over the whole run (one batch per stream, one ``method.steps`` call).
    """

    def __init__(
        self,
        cfg: Config,
        data: DataBundle,
        model: nn.Module,
        method: Method,
        run: RunDir,
        device: torch.device,
        console: Console | None = None,
    ) -> None:
        self.cfg, self.data, self.run, self.device = cfg, data, run, device
        self.dist = process_group.info()
        t = cfg.train
        if self.dist.active and cfg.eval.bn_train_mode:
            raise ConfigError("eval.bn_train_mode (BatchNorm batch statistics at evaluation) "
                              "needs one process: each rank would normalize its own batches")
        if self.dist.active and t.sync_bn and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model, self.method = model.to(device), method.to(device)
        self.view = training_view(self.model, t.precision, device, t.channels_last)
        self.scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
        self.console = console or Console(quiet=not self.dist.is_main)
        self.optimizer = build_optimizer(cfg, self.model, self.method)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        labels = data.splits.train.labels
        self.samplers = method.batch_samplers(labels, cfg.train)
        unknown = sorted(set(data.train_streams) - set(self.samplers))
        if unknown:
            raise ConfigError(f"data.stream_transforms names stream(s) {', '.join(unknown)}; "
                              f"this method's streams: {', '.join(self.samplers)}")
        for sampler in self.samplers.values():
            sampler.shard(self.dist.rank, self.dist.world_size)
        frozen = cfg.model.freeze_bn or cfg.model.freeze_backbone
        if self.dist.active and device.type != "cuda" and not frozen and any(
                isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            self.warn("BatchNorm statistics are per rank here (SyncBatchNorm needs CUDA): "
                      "training differs from one process unless model.freeze_bn=true")
        skipped = getattr(self.samplers.get("class"), "skipped_classes", ())
        if len(skipped):
            ids = ", ".join(str(c) for c in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
            self.warn(f"{len(skipped)} training class(es) with a single image are never sampled "
                      f"(ids {ids})")
        self.checkpoints = CheckpointFolder(run.checkpoints)
        self.last_checkpoint: Path | None = None
        self.epoch, self.batch, self.iteration = 0, 0, 0
        self.current = _empty_epoch()
        self.skipped: list[list[int]] = []  # [epoch, iteration] of skipped non-finite steps
        self.best: float = -math.inf
        self.bad_epochs = 0
        self.results: dict = {}
        self._rng: dict | None = None  # RNG state to restore when the loop continues (resume)
        self._sums: dict[str, torch.Tensor] = {}  # the epoch's loss sums, on the device
        self._unread = False  # _sums changed since _read_sums
        self._kept: dict[str, DataLoader | DeviceBatches] = {}  # `_loaders`: kept across epochs

    def warn(self, message: str) -> None:
        """One line on the console."""
        self.console.print(f"warning: {message}", style="yellow", markup=False, highlight=False,
                           soft_wrap=True)

    # ----------------------------------------------------------------- checkpoints
    def state(self, rng: dict | None = None) -> dict:
        """Everything a checkpoint holds besides the weights (``rng``: default this
        process's RNG states)."""
        self._read_sums()
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "iteration": self.iteration,
            "current_epoch": self.current,
            "skipped": self.skipped,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "rng": rng or rng_state(device=self.device),
            "results": dict(self.results),
        }

    def save_checkpoint(self) -> Path:
        """Write the pair of the current position and prune old pairs; returns the state file.

        Rank 0 writes (the state is the same on every rank); every rank learns the outcome. A
        failed write (full disk) raises CheckpointError; the previous pair stays intact.
        """
        outcome: tuple[str, str] = ("ok", "")
        # each rank's CUDA generator (its own device; the other RNGs are the same on all ranks)
        rng = rng_state(process_group.all_objects(cuda_rng_state(self.device)))
        if self.dist.is_main:
            try:
                path = self.checkpoints.save(self.model.state_dict(), self.state(rng),
                                             self.epoch, self.batch)
                self.checkpoints.prune(self.cfg.train.keep_checkpoints)
                outcome = ("ok", str(path))
            except WriteError as e:
                outcome = ("error", str(e))
        status, text = process_group.broadcast_object(outcome)
        if status == "error":
            raise CheckpointError(
                f"could not save a checkpoint ({text}); the previous one "
                f"({self.last_checkpoint or 'none'}) is intact: free space, then "
                f"dmlkit train --resume {self.run.path}"
            )
        self.last_checkpoint = Path(text)
        return self.last_checkpoint

    def resume(self) -> None:
        """Continue from the newest complete, readable checkpoint of the run directory."""
        found = self.checkpoints.load_newest(self.warn)
        if found is None:
            self.console.print(f"no checkpoint in {self.run.path} yet: training from the start")
            self._trim_metrics()
            return
        path, state, weights = found
        try:
            self.model.load_state_dict(weights)
            self.method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state["scheduler"] is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path} does not fit this run's model ({first_line(e)})"
            ) from None
        self.epoch, self.best, self.bad_epochs = state["epoch"], state["best"], state["bad_epochs"]
        self.batch = state.get("batch", 0)
        self.iteration = state.get("iteration", 0)
        self.current = {**_empty_epoch(), **state.get("current_epoch", {})}
        self.skipped = [list(s) for s in state.get("skipped", [])]
        self.results.update(state["results"])
        self._rng = state.get("rng") or {"torch": state["torch_rng"]}
        self.last_checkpoint = path
        self._trim_metrics()
        where = (f"epoch {self.epoch + 1}, after iteration {self.batch}" if self.batch
                 else f"after epoch {self.epoch}")
        self.console.print(f"resumed {self.run.path} from {path.name} ({where})")

    def _trim_metrics(self) -> None:
        """Drop metrics.csv rows of epochs after the checkpoint (written before a kill)."""
        path = self.run.path / "metrics.csv"
        if not self.dist.is_main or not path.is_file():
            return
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        header, body = (rows[0], rows[1:]) if rows else ([], [])
        if "epoch" not in header:
            path.unlink()
            return
        col = header.index("epoch")
        keep = [r for r in body if len(r) == len(header) and r[col].isdigit()
                and int(r[col]) <= self.epoch]
        if len(keep) < len(body):
            buf = io.StringIO()
            csv.writer(buf).writerows([header, *keep])
            atomic_write_bytes(path, buf.getvalue().encode())

    def _restore_rng(self) -> None:
        if self._rng is not None:
            set_rng_state(self._rng, self.dist.rank, self.device)
            self._rng = None

    # ----------------------------------------------------------------- loop
    def _loaders(self) -> dict[str, DataLoader | DeviceBatches]:
        """One loader per stream: batches built on the device for a batched in-memory dataset
        (random draws a function of the position), else a DataLoader.

        ``data.augment_seeds: position``: each sample's draws are seeded by its position
        (`SeededBatches`) and the DataLoader, with persistent workers, is kept across epochs
        (it draws nothing from the global RNG). ``loader``: a DataLoader per epoch whose
        workers take torch's seeds from the global RNG (configs before version 3)."""
        d = self.cfg.data
        position = d.augment_seeds == "position"
        for stream, (name, sampler) in enumerate(self.samplers.items()):
            sampler.set_epoch(self.epoch, self.batch)
            if position and name in self._kept:
                continue
            dataset = self.data.stream(name)  # each stream with its own transform
            if dataset.batched:
                self._kept[name] = DeviceBatches(dataset, sampler, self.device,
                                                 self.cfg.train.seed, stream)
                continue
            workers = loader_workers(d.num_workers, dataset)
            seeded = position and isinstance(dataset, ImageDataset)  # features: no transform
            self._kept[name] = DataLoader(
                dataset,
                batch_sampler=SeededBatches(sampler, self.cfg.train.seed, stream) if seeded
                else sampler,
                num_workers=workers,
                worker_init_fn=ignore_sigint,
                pin_memory=self.device.type == "cuda",
                persistent_workers=position and workers > 0,
                prefetch_factor=prefetch_factor(workers),
                generator=torch.Generator() if position else None,
            )
        return {name: self._kept[name] for name in self.samplers}

    def train_epoch(self, progress: Progress, stop: StopOnSignal | None = None) -> dict:
        """The rest of the current epoch (all of it unless resumed mid-epoch)."""
        self.model.train()
        self.method.train()
        if self.batch == 0:
            self.current = _empty_epoch()
            self._restore_rng()  # an epoch-end state precedes the loaders' seed draws
        loaders = self._loaders()
        iterators = [iter(loader) for loader in loaders.values()]
        self._restore_rng()  # a mid-epoch state was taken after them
        n_iter = min(len(s) for s in self.samplers.values())
        task = progress.add_task(f"epoch {self.epoch + 1}/{self.cfg.train.epochs}",
                                 total=n_iter, completed=self.batch, info="")
        cur, every = self.current, self.cfg.train.checkpoint_every
        self._sums = {k: torch.tensor(v, dtype=torch.float64, device=self.device)
                      for k, v in cur["sums"].items()}
        log_every = self.cfg.train.log_every
        t0 = time.perf_counter() - cur["seconds"]
        for it, streams in enumerate(_drawn(iterators), start=self.batch):
            batches = {
                name: tuple(t.to(self.device, non_blocking=True) if torch.is_tensor(t) else t
                            for t in b)
                for name, b in zip(loaders, streams, strict=True)
            }
            cur["images"] += sum(len(b[0]) for b in batches.values()) * self.dist.world_size
            for losses in self.method.steps(self.view, batches, it):
                self._step(losses, batches, it)
            self.batch, self.iteration = it + 1, self.iteration + 1
            cur["seconds"] = time.perf_counter() - t0
            progress.update(task, advance=1)
            if self.batch % log_every == 0 or self.batch == n_iter:  # one device read
                mean = self._read_sums().get("loss", math.nan) / max(cur["steps"], 1)
                progress.update(task, info=f"loss {mean:.4f}  "
                                f"{cur['images'] / max(cur['seconds'], 1e-9):.0f} img/s")
            # several ranks agree on a stop through an all-reduce: once per log interval
            poll = not self.dist.active or self.batch % log_every == 0 or self.batch == n_iter
            if stop is not None and poll and self._stop_requested(stop):
                self.save_checkpoint()
                raise self._interrupted(stop)
            if every and self.iteration % every == 0 and self.batch < n_iter:
                self.save_checkpoint()
        if cur["skipped"] and not cur["steps"]:
            raise TrainingError(f"every step of epoch {self.epoch + 1} had a non-finite loss or "
                                f"gradient; last good checkpoint: {self.last_checkpoint}")
        out = {f"train_{k}": v / max(cur["steps"], 1) for k, v in self._read_sums().items()}
        out["train_seconds"] = cur["seconds"]
        out["train_img_per_s"] = cur["images"] / max(cur["seconds"], 1e-9)
        if self.cfg.train.skip_nonfinite:
            out["skipped_steps"] = cur["skipped"]
        if self.scaler.is_enabled():
            out["fp16_overflow_steps"] = cur["overflows"]
        return out

    def _step(self, losses: dict[str, torch.Tensor], batches: dict, it: int) -> None:
        """One optimizer step on ``losses["loss"]``, unless it or a gradient is non-finite.

        Gradients are averaged over ranks before the check, which reads the device once: one
        isfinite over the loss and the gradients' norms (a norm past the float32 range counts
        as non-finite). With fp16 the loss is checked before backward, and a non-finite
        gradient is the gradient scaler's overflow: the scaler skips the step and lowers its
        scale.
        """
        loss = losses["loss"]
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.optimizer.zero_grad(set_to_none=True)
        fp16 = self.scaler.is_enabled()
        if fp16 and not torch.isfinite(loss):
            self._skip("loss", batches, it)
            return
        self.scaler.scale(loss).backward()
        process_group.average_gradients(params)
        if fp16:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in params if p.grad is not None]
        checked = loss.detach().float().reshape(1)
        if grads:
            checked = torch.cat([checked, torch.stack(torch._foreach_norm(grads)).float()])
        if not bool(torch.isfinite(checked).all()):
            if fp16:
                self.scaler.step(self.optimizer)  # skipped: inf found while unscaling
                self.scaler.update()
                self.current["overflows"] += 1
                return
            self._skip("gradient" if bool(torch.isfinite(loss)) else "loss", batches, it)
            return
        if self.cfg.optim.grad_clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.cfg.optim.grad_clip_value)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.current["steps"] += 1
        for k, v in losses.items():  # float64 running sums on the device, read by _read_sums
            total = self._sums.get(k)
            value = v.detach().to(torch.float64)
            self._sums[k] = value if total is None else total + value
        self._unread = True

    def _skip(self, bad: str, batches: dict, it: int) -> None:
        """A non-finite ``bad`` ("loss" or "gradient"): raise, or skip the step and count it."""
        where = f"epoch {self.epoch + 1}, iteration {it + 1}"
        if not self.cfg.train.skip_nonfinite:
            idx = sorted({int(i) for b in batches.values() for i in b[2]})
            more = f" and {len(idx) - 20} more" if len(idx) > 20 else ""
            raise TrainingError(
                f"non-finite {bad} at {where} (batch samples {idx[:20]}{more}); last good "
                f"checkpoint: {self.last_checkpoint or 'none yet'}; lower optim.lr or set "
                "train.skip_nonfinite=true"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.current["skipped"] += 1
        self.skipped.append([self.epoch + 1, it + 1])
        self.warn(f"skipped a step with a non-finite {bad} at {where}")

    def _read_sums(self) -> dict[str, float]:
        """The epoch's loss sums, read from the device (one transfer). They are summed there
        in float64 in step order from the epoch's start (or resumed position), so the values
        do not depend on when they are read."""
        if self._unread:
            values = torch.stack(list(self._sums.values())).tolist()
            self.current["sums"] = dict(zip(self._sums, values, strict=True))
            self._unread = False
        return self.current["sums"]

    @staticmethod
    def _stop_requested(stop: StopOnSignal) -> bool:
        """Whether a signal reached any rank; then ``stop.requested`` names one on every rank
        (SIGTERM where the signal reached another rank)."""
        if not process_group.any_rank(stop.requested is not None):
            return False
        stop.requested = stop.requested or signal.SIGTERM
        return True

    def _interrupted(self, stop: StopOnSignal) -> TrainingInterrupted:
        where = (f"epoch {self.epoch + 1}, iteration {self.batch}" if self.batch
                 else f"the end of epoch {self.epoch}")
        return TrainingInterrupted(
            f"stopped by {stop.name} at {where}; saved {self.last_checkpoint}; continue with: "
            f"dmlkit train --resume {self.run.path}",
            stop.requested,
        )

    def _early_stopped(self) -> bool:
        patience = self.cfg.train.patience
        return patience is not None and self.bad_epochs >= patience

    def fit(self) -> dict:
        """Train for ``train.epochs``; returns and writes ``metrics.json``.

        Rank 0 also logs to ``run.loggers``: each epoch after its checkpoint, the test metrics
        and files at the end (`dmlkit.engine.tracking.tracker`).
        """
        tracker = Tracker.open(self.cfg, self.run.path) if self.dist.is_main else Tracker([])
        finished = False
        try:
            results = self._fit(tracker)
            finished = True
        finally:
            tracker.close(finished)
        return results

    def _fit(self, tracker: Tracker) -> dict:
        cfg = self.cfg
        if tracker.loggers:
            tracker.log_epochs(self.run.metrics_rows())  # what a crash kept from the trackers
        seed_everything(cfg.train.seed, cfg.train.deterministic, self.device)
        if not self.dist.is_main:
            process_group.barrier()  # rank 0 prepares first (e.g. trains and caches a master)
        self.method.prepare(self.model, self.data, self.run.path, self.device)
        if self.dist.active:
            if self.dist.is_main:
                process_group.barrier()
            # ranks draw alike: every rank takes rank 0's states (its CUDA device's included)
            set_rng_state(process_group.broadcast_object(rng_state(device=self.device)), 0,
                          self.device)
        tests = cfg.eval.test and cfg.eval.evaluate_untrained
        if tests and "untrained" not in self.results:
            self.results["untrained"] = evaluate_model(self.model, self.data.test, cfg,
                                                       self.device, "untrained evaluation")
        if tests and cfg.model.freeze_backbone and "pretrained_features" not in self.results:
            self.results["pretrained_features"] = evaluate_model(
                NormalizedFeatures(), self.data.test, cfg, self.device,
                "pretrained features evaluation")
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[info]}")]
        try:
            with StopOnSignal() as stop, live_bars(*columns) as progress:
                while self.epoch < cfg.train.epochs and not self._early_stopped():
                    row = {"epoch": self.epoch + 1, **self.train_epoch(progress, stop)}
                    plain(f"epoch {self.epoch + 1}/{cfg.train.epochs}: loss "
                          f"{row.get('train_loss', math.nan):.4f}, {row['train_img_per_s']:.0f} "
                          f"img/s, {row['train_seconds']:.1f} s")
                    row["lr"] = self.optimizer.param_groups[0]["lr"]
                    row.update({f"method_{k}": v for k, v in self.method.logs().items()})
                    row.update(self.method.validation_logs(self.model, self.device))
                    self.epoch, self.batch = self.epoch + 1, 0
                    self._validate(row)
                    self._step_scheduler(row)
                    if self.dist.is_main:
                        self.run.append_metrics(row)
                    self.save_checkpoint()
                    if tracker.loggers:
                        tracker.log_epochs(self.run.metrics_rows())
                    if self._stop_requested(stop):
                        raise self._interrupted(stop)
                    if self._early_stopped():
                        self.console.print(f"early stop after epoch {self.epoch}")
        finally:
            self._kept.clear()  # persistent DataLoader workers end here
        if self.dist.is_main:
            save_weights(self.model.state_dict(), self.run.path / "model.safetensors")
        if cfg.eval.test:
            self._test()
        self.results["epochs_trained"] = self.epoch
        if cfg.train.skip_nonfinite:
            self.results["skipped_nonfinite"] = {"count": len(self.skipped),
                                                 "at": self.skipped[:MAX_LISTED]}
        self.results["method"] = self.method.summary()
        if self.dist.is_main:
            self.run.write_json("metrics.json", self.results)
            with phase("writing the report"):
                write_run_report(self.run.path)
            tracker.log_results(self.run.path)
        process_group.barrier()  # the run directory is complete before any rank returns
        return self.results

    def _test(self) -> None:
        """``final`` (and ``final_<variant>``): the trained model's test metrics."""
        cfg = self.cfg
        self.results["final"] = evaluate_model(self.model, self.data.test, cfg, self.device,
                                               "final evaluation")
        retrieval = self.model.retrieval
        try:  # other embeddings the method offers (e.g. Sharing Matters' shared head)
            for name, spec in self.method.retrieval_variants().items():
                self.model.retrieval = spec
                self.results[f"final_{name}"] = evaluate_model(
                    self.model, self.data.test, cfg, self.device, f"final evaluation ({name})")
        finally:
            self.model.retrieval = retrieval

    def _validate(self, row: dict) -> None:
        cfg = self.cfg.train
        if self.data.val is None or not cfg.eval_every or self.epoch % cfg.eval_every:
            return
        val = evaluate_model(self.model, self.data.val, self.cfg, self.device,
                             f"validation after epoch {self.epoch}")
        row.update({f"val_{k}": v for k, v in val.items()})
        score = val.get(PRIMARY, float("nan"))
        if np.isfinite(score) and score > self.best:
            self.best, self.bad_epochs = score, 0
            if self.dist.is_main:
                save_weights(self.model.state_dict(), self.run.path / "best.safetensors")
            self.results["best_val"] = {"epoch": self.epoch, **val}
        else:
            self.bad_epochs += 1

    def _step_scheduler(self, row: dict) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(row.get("train_loss", 0.0))
        elif self.scheduler is not None:
            self.scheduler.step()

