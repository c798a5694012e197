"""Guided DML (Gonzalez-Zapata et al., 2022): master -> reduced hypothesis space -> student.

Stage one (``prepare``, once per run): a multi-branch master (one conv branch per training
class, routing by label, shared MLP head) is trained on a fixed set of class-pair triplets
with ``(1 - beta) * triplet(margin) + beta * mean ||f_a - f_p||`` (branch features). Every
training image then goes through its own class's branch; these target embeddings are written
to the run directory (keyed by the master's config and weights hashes) and reused.

Stage two (the trainer's loop, a part of a composed method): the student regresses the cached
targets, ``weight * mean_i ||s(x_i) - t_i||_2``; no labels are needed (the composed method's
``loss_weight`` adds the base metric loss, which does use labels; 0: the paper's student).
``teacher: run`` takes the targets from any trained dmlkit run instead (embedding-level
distillation). As the official code, ``student_val_fraction`` holds a random fraction of the
training images out of the student's batches and logs their distillation loss each epoch
(``val_loss``, eval mode, mean of per-batch means), and ``student_drop_last=false`` keeps the
last partial batch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from dmlkit.base.atomic_write import atomic_write_bytes
from dmlkit.base.file_stats import file_stats
from dmlkit.base.files import load_weights, save_weights
from dmlkit.base.progress import bar, phase
from dmlkit.config import GuidedConfig, TrainConfig
from dmlkit.data.class_pair_triplets import build_class_pair_triplets
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.holdout import random_holdout
from dmlkit.data.random_batch_sampler import RandomBatchSampler
from dmlkit.data.transforms import build_batch_transform, build_transform
from dmlkit.errors import ConfigError
from dmlkit.losses.distill import EmbeddingDistillationLoss
from dmlkit.losses.guided_master_loss import GuidedMasterLoss
from dmlkit.methods.guided_targets import (
    compute_master_targets,
    config_hash,
    load_or_compute,
    targets_from_model,
)
from dmlkit.models.multi_branch_master import MultiBranchMaster
from dmlkit.models.run_model import load_run_model


def _announced(text: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()`` shown as the phase ``text`` on stderr."""
    with phase(text):
        return compute()


def _images(dataset, indices: np.ndarray, device: torch.device) -> torch.Tensor:
    """The transformed images of samples ``indices`` on ``device``: one batch operation for a
    batched dataset with a deterministic transform, else sample by sample."""
    if getattr(dataset, "batched", False) and not dataset.batch_transform.random:
        return dataset.batch(torch.as_tensor(indices, dtype=torch.long), device)[0]
    return torch.stack([dataset[int(i)][0] for i in indices]).to(device)


def training_set_key(catalog) -> str:
    """sha256 of a training set's identity: dataset name, labels and images (their pixels, or
    their files' `file_stats`: a file rewritten or replaced under the same name changes it)."""
    h = hashlib.sha256(catalog.name.encode())
    h.update(np.ascontiguousarray(catalog.labels).tobytes())
    if catalog.images is not None:
        h.update(np.ascontiguousarray(catalog.images).tobytes())
    else:
        h.update(json.dumps(file_stats(catalog.paths)).encode())
    return h.hexdigest()


class GuidedPart(nn.Module):
    """The student's distillation term; ``prepare`` trains (or loads) the teacher and caches
    its targets. ``labelled``: the composed method also has a metric loss (M-per-class
    batches), else the student draws random batches of its share of the training images.
    ``cache_dir``: a trained master is kept in ``<cache_dir>/guided-masters/<its config
    hash>/`` and reused by every run that would train the same master (other student
    settings, trials, methods); None: in the run directory's ``master/``."""

    def __init__(
        self, cfg: GuidedConfig, classes, embedding_dim: int, seed: int = 0,
        batch_size: int = 64, labelled: bool = False, cache_dir: Path | None = None,
    ) -> None:
        super().__init__()
        if cfg.teacher == "run" and not cfg.teacher_run:
            raise ConfigError("method.parts.guided.teacher_run must name a run directory")
        if cfg.master_image_size is not None and not cfg.master_raw_pixels:
            raise ConfigError("method.parts.guided.master_image_size sizes the master's raw "
                              "pixels: set master_raw_pixels=true or unset it")
        if labelled and (cfg.student_val_fraction > 0 or not cfg.student_drop_last):
            raise ConfigError("method.loss_weight > 0 with guided samples M-per-class batches: "
                              "set student_val_fraction=0 and student_drop_last=true")
        self.cfg, self.seed, self.dim, self.batch_size = cfg, seed, embedding_dim, batch_size
        self.cache_dir = cache_dir
        self.class_ids = [int(c) for c in classes]
        self.distill = EmbeddingDistillationLoss()
        self.timings: dict[str, float] = {}
        self.held_out: Subset | None = None  # the student's validation images (set by prepare)
        self.register_buffer("targets", torch.zeros(0, embedding_dim), persistent=False)

    def student_split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(trained, held-out) indices of the ``n`` training images: ``student_val_fraction``."""
        return random_holdout(n, self.cfg.student_val_fraction, self.seed)

    def class_batch_sampler(self, labels: np.ndarray, cfg: TrainConfig) -> RandomBatchSampler:
        """The unlabelled student's stream: random batches of its training images."""
        kept, _ = self.student_split(len(labels))
        return RandomBatchSampler(len(labels), cfg.batch_size, cfg.seed, cfg.batches_per_epoch,
                                  indices=kept, drop_last=self.cfg.student_drop_last)

    def terms(self, embeddings: torch.Tensor, index: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """(logged ``{"distill": mean ||s_i - t_i||}``, ``weight * distill``) of gathered
        student embeddings and sample indices."""
        value = self.distill(embeddings, self.targets[index])
        return {"distill": value}, self.cfg.weight * value

    # ------------------------------------------------------------------ stage one
    def master_config(self, in_channels: int, image_size: tuple[int, int],
                      data_key: str = "") -> dict:
        """Everything the master's weights depend on (its cache key), the training set included."""
        c = self.cfg
        return {"data": data_key, "classes": self.class_ids, "in_channels": in_channels,
                "image_size": list(image_size), "out_dim": self.dim, "epochs": c.master_epochs,
                "lr": c.master_lr, "margin": c.master_margin, "beta": c.master_beta,
                "batch_size": c.master_batch_size, "raw_pixels": c.master_raw_pixels,
                "seed": self.seed}

    def train_master(self, dataset, labels: np.ndarray, master_cfg: dict,
                     device: torch.device, log=print) -> MultiBranchMaster:
        """Stage one: SGD on the fixed class-pair triplet set (each batch one class pair).

        A step waits for the device nowhere: images come as whole batches (`_images`), the
        labels stay on the host (the master routes by them there) and the epoch's loss is
        summed on the device, read once per epoch.
        """
        torch.manual_seed(self.seed)
        master = MultiBranchMaster(self.class_ids, master_cfg["in_channels"],
                                   tuple(master_cfg["image_size"]), self.dim).to(device)
        triplets = build_class_pair_triplets(labels, batch_size=self.cfg.master_batch_size,
                                             seed=self.seed)
        loss_fn = GuidedMasterLoss(self.cfg.master_margin, self.cfg.master_beta)
        opt = torch.optim.SGD(master.parameters(), lr=self.cfg.master_lr)
        master.train()
        host_labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)

        epochs = self.cfg.master_epochs
        for epoch in range(epochs):
            total = torch.zeros((), dtype=torch.float64, device=device)
            with bar(f"training the Guided master, epoch {epoch + 1}/{epochs}",
                     len(triplets), unit="batch") as advance:
                for a, p, n in triplets:
                    y, yn = host_labels[torch.as_tensor(a)], host_labels[torch.as_tensor(n)]
                    ea, fa = master(_images(dataset, a, device), y)
                    ep, fp = master(_images(dataset, p, device), y)
                    en, _ = master(_images(dataset, n, device), yn)
                    loss = loss_fn(ea, ep, en, fa, fp)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.detach()  # float64, in step order: the sum of loss.item()s
                    advance(1)
            log(f"master epoch {epoch + 1}/{epochs}: "
                f"loss {float(total) / len(triplets):.4f}")
        return master.eval()

    def prepare(self, model: nn.Module, data, run_dir: Path, device: torch.device) -> None:
        """Train or load the teacher; compute or load the cached targets of every train image."""
        dataset, labels = data.train_eval, data.splits.train.labels
        if self.cfg.teacher == "run":
            teacher = load_run_model(Path(self.cfg.teacher_run))[1].to(device)
            teacher_cfg = {"teacher_run": str(Path(self.cfg.teacher_run).resolve())}
            targets = load_or_compute(
                run_dir, teacher, teacher_cfg,
                lambda: _announced("computing the teacher's targets",
                                   lambda: targets_from_model(teacher, dataset, device=device)),
                key="teacher",
            )
        else:
            if self.cfg.master_raw_pixels:  # the master sees raw 0-255 pixels (official code)
                size = self.cfg.master_image_size or data.image_size
                channels = data.in_channels
                dataset = ImageDataset(data.splits.train,
                                       build_transform("raw255", False, size, channels),
                                       build_batch_transform("raw255", False, size, channels))
            shape = dataset[0][0].shape
            master_cfg = self.master_config(int(shape[0]), (int(shape[1]), int(shape[2])),
                                            training_set_key(data.splits.train))
            t0 = time.perf_counter()
            # trained (seeded) or loaded from the cache, the run's RNG continues the same way
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                master = self._load_or_train_master(dataset, labels, master_cfg, run_dir,
                                                    device)
            t1 = time.perf_counter()
            targets = load_or_compute(
                run_dir, master, master_cfg,
                lambda: _announced("computing the Guided master's targets", lambda:
                                   compute_master_targets(master, dataset, labels, device=device)),
            )
            self.timings = {"master_seconds": t1 - t0,
                            "targets_seconds": time.perf_counter() - t1,
                            "num_targets": len(targets)}
        if targets.shape[1] != self.dim:
            raise ConfigError(f"teacher embeddings have dim {targets.shape[1]} but the student "
                              f"head has {self.dim}: set model.head.dim={targets.shape[1]}")
        self.targets = targets.to(device)
        _, held = self.student_split(len(labels))
        self.held_out = Subset(data.train, held.tolist()) if len(held) else None

    @torch.no_grad()
    def validation_logs(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """``val_loss``: the distillation loss on the held-out images, in eval mode, as the
        mean of per-batch means over unshuffled batches of ``batch_size`` (official
        ``evaluate_step``); nothing without a held-out set."""
        if self.held_out is None:
            return {}
        was_training = model.training
        model.eval()
        try:
            loader = DataLoader(self.held_out, batch_size=self.batch_size,
                                generator=torch.Generator())  # leaves the global RNG alone
            losses = [self.distill(model(x.to(device)), self.targets[i.to(device)])
                      for x, _, i in loader]
        finally:
            model.train(was_training)
        # one device read; the per-batch float32 means averaged in float64 (as floats would be)
        return {"val_loss": float(np.mean(torch.stack(losses).double().cpu().numpy()))}

    def summary(self) -> dict:
        """Stage-one cost: master training and target generation (0 when loaded from cache)."""
        return dict(self.timings)

    def _load_or_train_master(self, dataset, labels, master_cfg, run_dir, device):
        key = config_hash(master_cfg)
        folder = Path(run_dir) / "master" if self.cache_dir is None \
            else Path(self.cache_dir) / "guided-masters" / key
        meta = folder / "master.json"
        if meta.is_file() and json.loads(meta.read_text()).get("config_hash") == key:
            master = MultiBranchMaster(self.class_ids, master_cfg["in_channels"],
                                       tuple(master_cfg["image_size"]), self.dim)
            master.load_state_dict(load_weights(folder / "master.safetensors"))
            return master.to(device).eval()
        master = self.train_master(dataset, labels, master_cfg, device)
        save_weights(master.state_dict(), folder / "master.safetensors")
        atomic_write_bytes(meta, json.dumps({"config_hash": key, **master_cfg}).encode())
        return master
