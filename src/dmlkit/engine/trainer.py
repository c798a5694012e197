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

import copy
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader

from dmlkit.base import process_group
from dmlkit.base.files import save_weights
from dmlkit.base.progress import live_bars, phase, plain
from dmlkit.base.run_dir import RunDir
from dmlkit.config import Config
from dmlkit.data.build import DataBundle
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.device_batches import DeviceBatches
from dmlkit.data.seeded_batches import SeededBatches
from dmlkit.data.transforms import split_to_float
from dmlkit.data.workers import loader_workers, one_line_errors, prefetch_factor
from dmlkit.engine.checkpoint import CheckpointFolder
from dmlkit.engine.evaluate import evaluate_model
from dmlkit.engine.interrupt import StopOnSignal, TrainingInterrupted, ignore_sigint
from dmlkit.engine.optim import build_optimizer, build_scheduler
from dmlkit.engine.precision import training_view
from dmlkit.engine.run_report import write_run_report
from dmlkit.engine.seed import rng_state, seed_everything, set_rng_state
from dmlkit.engine.step import BadStep, Stepper
from dmlkit.engine.tracking.tracker import Tracker
from dmlkit.engine.trainer_checkpoints import Checkpointing, empty_epoch
from dmlkit.errors import ConfigError, TrainingError
from dmlkit.methods.base import Method
from dmlkit.models.heads import NormalizedFeatures

PRIMARY = "map_at_r"
MAX_LISTED = 100  # skipped steps listed in metrics.json


def _drawn(iterators: list) -> Iterator[tuple]:
    """One batch of every stream per iteration (a worker's error in one line)."""
    return one_line_errors(zip(*iterators, strict=False))


class Trainer(Checkpointing):
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
        self.stepper = Stepper(self.optimizer, self.scaler, device, cfg.optim.grad_clip_value)
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
        for line in data.warnings:
            self.warn(line)
        skipped = getattr(self.samplers.get("class"), "skipped_classes", ())
        if len(skipped):
            ids = ", ".join(str(c) for c in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
            self.warn(f"{len(skipped)} training class(es) with a single image are never sampled "
                      f"(ids {ids})")
        self.checkpoints = CheckpointFolder(run.checkpoints)
        self.last_checkpoint: Path | None = None
        self.epoch, self.batch, self.iteration = 0, 0, 0
        self.current = empty_epoch()
        self.skipped: list[list[int]] = []  # [epoch, iteration] of skipped non-finite steps
        self.best: float = -math.inf
        self.bad_epochs = 0
        self.results: dict = {}
        self._rng: dict | None = None  # RNG state to restore when the loop continues (resume)
        self._kept: dict[str, DataLoader | DeviceBatches] = {}  # `_loaders`: kept across epochs
        self._to_float: dict[str, Callable] = {}  # per stream: a uint8 batch's device transform

    def warn(self, message: str) -> None:
        """One line on the console."""
        self.console.print(f"warning: {message}", style="yellow", markup=False, highlight=False,
                           soft_wrap=True)

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
            split = split_to_float(getattr(dataset, "transform", None))
            if split is not None:  # uint8 from the workers, to float on the device
                dataset = copy.copy(dataset)
                dataset.transform, self._to_float[name] = split
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
            self.current = empty_epoch()
            self._restore_rng()  # an epoch-end state precedes the loaders' seed draws
        loaders = self._loaders()
        iterators = [iter(loader) for loader in loaders.values()]
        self._restore_rng()  # a mid-epoch state was taken after them
        n_iter = min(len(s) for s in self.samplers.values())
        task = progress.add_task(f"epoch {self.epoch + 1}/{self.cfg.train.epochs}",
                                 total=n_iter, completed=self.batch, info="")
        cur, every = self.current, self.cfg.train.checkpoint_every
        self.stepper.reset(cur["sums"])
        log_every = self.cfg.train.log_every
        t0 = time.perf_counter() - cur["seconds"]
        for it, streams in enumerate(_drawn(iterators), start=self.batch):
            batches = {
                name: tuple(t.to(self.device, non_blocking=True) if torch.is_tensor(t) else t
                            for t in b)
                for name, b in zip(loaders, streams, strict=True)
            }
            for name, to_float in self._to_float.items():
                images, *rest = batches[name]
                batches[name] = (to_float(images), *rest)
            cur["images"] += sum(len(b[0]) for b in batches.values()) * self.dist.world_size
            indices = [b[2] for b in batches.values()]
            for losses in self.method.steps(self.view, batches, it):
                self.stepper.step(losses, indices, it)
            self.batch, self.iteration = it + 1, self.iteration + 1
            cur["seconds"] = time.perf_counter() - t0
            progress.update(task, advance=1)
            if self.batch % log_every == 0 or self.batch == n_iter:  # the one device read
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
        sums = self._read_sums()
        if cur["skipped"] and not cur["steps"]:
            raise TrainingError(f"every step of epoch {self.epoch + 1} had a non-finite loss or "
                                f"gradient; last good checkpoint: {self.last_checkpoint}")
        out = {f"train_{k}": v / max(cur["steps"], 1) for k, v in sums.items()}
        out["train_seconds"] = cur["seconds"]
        out["train_img_per_s"] = cur["images"] / max(cur["seconds"], 1e-9)
        if self.cfg.train.skip_nonfinite:
            out["skipped_steps"] = cur["skipped"]
        if self.scaler.is_enabled():
            out["fp16_overflow_steps"] = cur["overflows"]
        return out

    def _read_sums(self) -> dict[str, float]:
        """The epoch's loss sums, read from the device with the steps' finite checks (one
        transfer; `Stepper.read`). The sums are taken there in float64 in step order from the
        epoch's start (or resumed position), so the values do not depend on when they are read.
        A step that was not applied is reported here (`_not_applied`)."""
        if self.stepper.unread:
            sums, applied, bad = self.stepper.read()
            self.current["sums"] = sums
            self.current["steps"] += applied
            for step in bad:
                self._not_applied(step)
        return self.current["sums"]

    def _not_applied(self, step: BadStep) -> None:
        """A step with a non-finite loss or gradient (not applied): an fp16 overflow is counted;
        otherwise raise, or count the skip and warn (``train.skip_nonfinite``)."""
        if step.overflow:
            self.current["overflows"] += 1
            return
        where = f"epoch {self.epoch + 1}, iteration {step.iteration + 1}"
        if not self.cfg.train.skip_nonfinite:
            idx = step.samples
            more = f" and {len(idx) - 20} more" if len(idx) > 20 else ""
            raise TrainingError(
                f"non-finite {step.bad} at {where} (batch samples {idx[:20]}{more}); last good "
                f"checkpoint: {self.last_checkpoint or 'none yet'}; lower optim.lr or set "
                "train.skip_nonfinite=true"
            )
        self.current["skipped"] += 1
        self.skipped.append([self.epoch + 1, step.iteration + 1])
        self.warn(f"skipped a step with a non-finite {step.bad} at {where}")

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

