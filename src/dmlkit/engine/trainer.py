"""The training loop shared by every method: optimizer, schedule, validation, checkpoints."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader

from dmlkit.config import Config
from dmlkit.data.build import DataBundle, EvalData
from dmlkit.engine.checkpoint import load_state, load_weights, save_state, save_weights
from dmlkit.engine.run_dir import RunDir
from dmlkit.engine.seed import seed_everything
from dmlkit.errors import TrainingError
from dmlkit.evaluation import evaluate
from dmlkit.evaluation.extract import extract_embeddings
from dmlkit.methods.base import Method
from dmlkit.protocol.run_report import write_run_report

PRIMARY = "map_at_r"


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


def evaluate_model(
    model: nn.Module, data: EvalData, cfg: Config, device: torch.device
) -> dict[str, float]:
    """Embed the query (and reference) set and compute every metric from one ranking."""
    e = cfg.eval
    train_mode = e.bn_train_mode
    q, ql = extract_embeddings(model, data.query, e.batch_size, device, cfg.data.num_workers,
                               train_mode)
    r = rl = None
    if data.reference is not None:
        r, rl = extract_embeddings(model, data.reference, e.batch_size, device,
                                   cfg.data.num_workers, train_mode)
    metrics = ["precision_at_1", "recall_at_k", "r_precision", "map_at_r"]
    if e.nmi:
        metrics += ["nmi", "ami"]
    return evaluate(q, ql, r, rl, recall_ks=tuple(e.recall_ks), metrics=metrics,
                    distance=e.distance, normalize=e.normalize)


class Trainer:
    """Runs ``method`` on ``model`` over ``data``, writing everything into ``run``."""

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
        self.model, self.method = model.to(device), method.to(device)
        self.console = console or Console()
        self.optimizer = build_optimizer(cfg, self.model, self.method)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        labels = data.splits.train.labels
        self.samplers = method.batch_samplers(labels, cfg.train)
        self.epoch = 0
        self.best: float = -math.inf
        self.bad_epochs = 0
        self.results: dict = {}

    # ----------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "method": self.method.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "results": {k: v for k, v in self.results.items() if k == "untrained"},
        }

    def save_checkpoint(self) -> None:
        ckpt = self.run.checkpoints
        save_weights(self.model.state_dict(), ckpt / f"model-{self.epoch:04d}.safetensors")
        save_state(self.state(), ckpt / f"state-{self.epoch:04d}.pt")
        # keep the newest train.keep_checkpoints epochs
        epochs = sorted(int(p.stem.split("-")[1]) for p in ckpt.glob("state-*.pt"))
        for old in epochs[: -self.cfg.train.keep_checkpoints]:
            (ckpt / f"state-{old:04d}.pt").unlink(missing_ok=True)
            (ckpt / f"model-{old:04d}.safetensors").unlink(missing_ok=True)

    def resume(self) -> None:
        """Continue from the newest complete checkpoint of the run directory."""
        ckpt = self.run.checkpoints
        epochs = sorted(int(p.stem.split("-")[1]) for p in ckpt.glob("state-*.pt"))
        if not epochs:
            return
        e = epochs[-1]
        state = load_state(ckpt / f"state-{e:04d}.pt")
        self.model.load_state_dict(load_weights(ckpt / f"model-{e:04d}.safetensors"))
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.best, self.bad_epochs = state["epoch"], state["best"], state["bad_epochs"]
        self.results.update(state["results"])
        self.console.print(f"resumed {self.run.path} after epoch {e}")

    # ----------------------------------------------------------------- loop
    def _loaders(self) -> dict[str, DataLoader]:
        loaders = {}
        for name, sampler in self.samplers.items():
            sampler.set_epoch(self.epoch)
            loaders[name] = DataLoader(
                self.data.train, batch_sampler=sampler, num_workers=self.cfg.data.num_workers
            )
        return loaders

    def train_epoch(self, progress: Progress) -> dict[str, float]:
        self.model.train()
        self.method.train()
        loaders = self._loaders()
        n_iter = min(len(s) for s in self.samplers.values())
        task = progress.add_task(f"epoch {self.epoch + 1}/{self.cfg.train.epochs}",
                                 total=n_iter, info="")
        sums: dict[str, float] = {}
        n_steps, n_images, t0 = 0, 0, time.perf_counter()
        for it, batches in enumerate(zip(*loaders.values(), strict=False)):
            batches = {
                name: tuple(t.to(self.device) if torch.is_tensor(t) else t for t in b)
                for name, b in zip(loaders, batches, strict=True)
            }
            n_images += sum(len(b[0]) for b in batches.values())
            for losses in self.method.steps(self.model, batches, it):
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    idx = sorted({int(i) for b in batches.values() for i in b[2]})[:20]
                    raise TrainingError(
                        f"non-finite loss at epoch {self.epoch + 1}, iteration {it + 1} "
                        f"(batch samples {idx}...); last good checkpoint: {self.run.checkpoints}"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.cfg.optim.grad_clip_value is not None:
                    torch.nn.utils.clip_grad_value_(
                        [p for g in self.optimizer.param_groups for p in g["params"]],
                        self.cfg.optim.grad_clip_value,
                    )
                self.optimizer.step()
                n_steps += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
            rate = n_images / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, advance=1,
                            info=f"loss {sums['loss'] / max(n_steps, 1):.4f}  {rate:.0f} img/s")
        seconds = time.perf_counter() - t0
        out = {f"train_{k}": v / max(n_steps, 1) for k, v in sums.items()}
        out["train_seconds"] = seconds
        out["train_img_per_s"] = n_images / max(seconds, 1e-9)
        return out

    def fit(self) -> dict:
        """Train for ``train.epochs``; returns and writes ``metrics.json``."""
        cfg = self.cfg
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        self.method.prepare(self.model, self.data, self.run.path, self.device)
        if cfg.eval.evaluate_untrained and "untrained" not in self.results:
            self.results["untrained"] = evaluate_model(self.model, self.data.test, cfg,
                                                       self.device)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[info]}")]
        with Progress(*columns, console=self.console, transient=False) as progress:
            while self.epoch < cfg.train.epochs:
                row = {"epoch": self.epoch + 1, **self.train_epoch(progress)}
                row["lr"] = self.optimizer.param_groups[0]["lr"]
                row.update({f"method_{k}": v for k, v in self.method.logs().items()})
                self.epoch += 1
                stop = self._validate(row)
                self._step_scheduler(row)
                self.run.append_metrics(row)
                self.save_checkpoint()
                if stop:
                    self.console.print(f"early stop after epoch {self.epoch}")
                    break
        save_weights(self.model.state_dict(), self.run.path / "model.safetensors")
        self.results["final"] = evaluate_model(self.model, self.data.test, cfg, self.device)
        retrieval = self.model.retrieval
        try:  # other embeddings the method offers (e.g. Sharing Matters' shared head)
            for name, spec in self.method.retrieval_variants().items():
                self.model.retrieval = spec
                self.results[f"final_{name}"] = evaluate_model(self.model, self.data.test, cfg,
                                                               self.device)
        finally:
            self.model.retrieval = retrieval
        self.results["epochs_trained"] = self.epoch
        self.results["method"] = self.method.summary()
        self.run.write_json("metrics.json", self.results)
        write_run_report(self.run.path)
        return self.results

    def _validate(self, row: dict) -> bool:
        cfg = self.cfg.train
        if self.data.val is None or not cfg.eval_every or self.epoch % cfg.eval_every:
            return False
        val = evaluate_model(self.model, self.data.val, self.cfg, self.device)
        row.update({f"val_{k}": v for k, v in val.items()})
        score = val.get(PRIMARY, float("nan"))
        if np.isfinite(score) and score > self.best:
            self.best, self.bad_epochs = score, 0
            save_weights(self.model.state_dict(), self.run.path / "best.safetensors")
            self.results["best_val"] = {"epoch": self.epoch, **val}
        else:
            self.bad_epochs += 1
        return cfg.patience is not None and self.bad_epochs >= cfg.patience

    def _step_scheduler(self, row: dict) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(row.get("train_loss", 0.0))
        elif self.scheduler is not None:
            self.scheduler.step()

