"""Training throughput: dmlkit's Trainer against a bare PyTorch + pytorch-metric-learning loop.

Both arms train the same architecture (same initial weights) on the same data with the same
batch size, M-per-class batches, loss, miner and optimizer; the anchor is the loop a PML user
writes: the training set as one normalized tensor, PML's MPerClassSampler for the indices,
``model -> miner -> loss -> backward -> step``, one ``.item()`` at the end. The dmlkit arm is
`Trainer.train_epoch` itself (batch loader, method, finite checks, logging, progress bar).
Optional third arm: dmlkit with the per-sample DataLoader path (``data.device_transforms=false``).

Repetitions alternate the arms (A, B, C, A, B, C, ...), so machine load hits them alike; the
result is the median over repetitions of each arm's img/s and of the per-repetition ratio.

    python benchmarks/bench_loop.py --workload fmnist --reps 7 --batches 10
    DMLKIT_CIFAR10_JPEG=../shared/data/cifar10-jpeg.tar.gz \\
        python benchmarks/bench_loop.py --workload cifar-r18 --reps 5 --batches 3
    python benchmarks/bench_loop.py --workload fmnist --eval-input --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from pytorch_metric_learning import losses, miners, samplers
from rich.console import Console
from rich.progress import Progress

from dmlkit import config
from dmlkit.base.run_dir import RunDir
from dmlkit.engine.train import build_components
from dmlkit.engine.trainer import Trainer
from dmlkit.models.embedding_model import build_model

# name -> (preset, overrides): triplet 0.1 + semihard miner, Adam, batch 64 (8 or 16 per class)
WORKLOADS = {
    "fmnist": ("fashion-mnist-demo", ["train.m_per_class=8"]),
    "cifar-r18": ("cifar10-zero-shot", ["model.backbone=resnet18_cifar", "data.transform=small"]),
}


class DmlkitArm:
    """`Trainer.train_epoch` over ``batches`` batches per call (one epoch each)."""

    def __init__(self, cfg: config.Config) -> None:
        data, method, model = build_components(cfg)
        run = RunDir.create(cfg)
        self.trainer = Trainer(cfg, data, model, method, run, torch.device(cfg.train.device),
                               Console(quiet=True))
        self.progress = Progress(console=Console(quiet=True))
        self.images = cfg.train.batch_size * cfg.train.batches_per_epoch
        self.data = data

    def __call__(self) -> float:
        t0 = time.perf_counter()
        self.trainer.train_epoch(self.progress)
        seconds = time.perf_counter() - t0
        self.trainer.epoch, self.trainer.batch = self.trainer.epoch + 1, 0
        return self.images / seconds


class AnchorArm:
    """The bare loop on the same architecture, data, loss, miner and optimizer (and
    ``train.precision`` bf16 / ``train.channels_last`` as the trainer applies them)."""

    def __init__(self, cfg: config.Config, data) -> None:
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg.model, data.in_channels).to(cfg.train.device)
        self.device = torch.device(cfg.train.device)
        with torch.no_grad():  # the eval transform has no randomness: the normalized set
            idx = torch.arange(len(data.train_eval))
            self.x = torch.cat([data.train_eval.batch(c, self.device)[0]
                                for c in idx.split(4096)]) if data.train_eval.batched else \
                torch.stack([data.train_eval[i][0] for i in range(len(data.train_eval))])
        self.y = data.train.labels.to(self.device)
        p = cfg.method.loss
        self.loss = losses.TripletMarginLoss(**p.params)
        self.miner = miners.TripletMarginMiner(**p.miner_params)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr)
        t = cfg.train
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                       enabled=t.precision == "bf16")
        self.batch, self.batches = t.batch_size, t.batches_per_epoch
        self.sampler = samplers.MPerClassSampler(
            data.train.labels.numpy(), t.m_per_class, batch_size=t.batch_size,
            length_before_new_iter=t.batch_size * t.batches_per_epoch)

    def __call__(self) -> float:
        self.model.train()
        t0 = time.perf_counter()
        order = torch.as_tensor(list(iter(self.sampler)), device=self.device)
        total = torch.zeros((), device=self.device)
        for b in range(self.batches):
            i = order[b * self.batch:(b + 1) * self.batch]
            with self.autocast:
                emb = self.model(self.x[i]).float()
            loss = self.loss(emb, self.y[i], self.miner(emb, self.y[i]))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach()
        total.item()
        return self.batch * self.batches / (time.perf_counter() - t0)


def eval_input(preset: str, overrides: list[str], reps: int) -> None:
    """Time the evaluation input path alone (test queries, batches of 512, no model): the
    per-sample DataLoader against the batched path, interleaved."""
    from dmlkit.data.build import build_data
    from dmlkit.evaluation.extract import dataset_batches

    sets = {"per-sample": build_data(config.load(preset, [*overrides,
                                                          "data.device_transforms=false"]).data),
            "batched": build_data(config.load(preset, overrides).data)}
    times: dict[str, list[float]] = {k: [] for k in sets}
    for _ in range(reps):
        for name, data in sets.items():
            t0 = time.perf_counter()
            n = sum(len(x) for x, _, _ in dataset_batches(data.test.query, 512, "cpu", 0))
            times[name].append(time.perf_counter() - t0)
    for name, t in times.items():
        print(f"{name:>10}: {statistics.median(t):.3f} s for {n} images "
              f"(reps: {' '.join(f'{x:.3f}' for x in t)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="fmnist")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--batches", type=int, default=10, help="batches per repetition")
    ap.add_argument("--warmup", type=int, default=1, help="untimed repetitions per arm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--per-sample", action="store_true",
                    help="also time dmlkit with the per-sample DataLoader path")
    ap.add_argument("--set", action="append", default=[], help="extra dmlkit overrides")
    ap.add_argument("--eval-input", action="store_true",
                    help="time only the evaluation input path (per-sample vs batched)")
    args = ap.parse_args()
    preset, overrides = WORKLOADS[args.workload]
    if args.eval_input:
        eval_input(preset, [*overrides, *args.set], args.reps)
        return
    overrides = [*overrides, f"train.batches_per_epoch={args.batches}",
                 f"train.device={args.device}", "train.epochs=1000", *args.set]
    with tempfile.TemporaryDirectory() as root:
        cfg = config.load(preset, [*overrides, f"run.root={root}"])
        arms = {"dmlkit": DmlkitArm(cfg)}
        arms = {"anchor": AnchorArm(cfg, arms["dmlkit"].data), **arms}
        if args.per_sample:
            slow = config.load(preset, [*overrides, f"run.root={root}",
                                        "data.device_transforms=false"])
            arms["dmlkit-per-sample"] = DmlkitArm(slow)
        rates: dict[str, list[float]] = {name: [] for name in arms}
        for rep in range(args.warmup + args.reps):
            for name, arm in arms.items():
                rate = arm()
                if rep >= args.warmup:
                    rates[name].append(rate)
    print(f"workload {args.workload} ({preset}, {' '.join(overrides)}), "
          f"{args.reps} reps x {args.batches} batches, torch threads {torch.get_num_threads()}")
    for name, r in rates.items():
        ratio = statistics.median(a / b for a, b in zip(r, rates["anchor"], strict=True))
        print(f"{name:>18}: {statistics.median(r):8.1f} img/s   median ratio to anchor "
              f"{ratio:.3f}x   (reps: {' '.join(f'{x:.0f}' for x in r)})")


if __name__ == "__main__":
    main()
