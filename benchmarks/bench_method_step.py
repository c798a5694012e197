"""Per-step training time of a method against its baseline, on the same batches.

Measures forward + loss + backward + optimizer step of each preset's method on identical
M-per-class batches of the preset's data, running the arms in a shuffled order each step to
share machine noise, and prints the median step time and the ratio to the first arm.

    python benchmarks/bench_method_step.py --arm triplet=triplet-small --arm mdr=mdr-small
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dmlkit import config
from dmlkit.data.build import build_data
from dmlkit.engine.seed import seed_everything
from dmlkit.engine.train import method_heads
from dmlkit.engine.trainer import build_optimizer
from dmlkit.methods.build import build_method
from dmlkit.models.embedding_model import build_model


def make_arm(preset: str, overrides: list[str], data):
    cfg = config.load(preset, overrides)
    seed_everything(0)
    method = build_method(cfg, data.splits.train.classes)
    model = build_model(cfg.model, data.in_channels, **method_heads(cfg))
    opt = build_optimizer(cfg, model, method)
    with tempfile.TemporaryDirectory() as run_dir:  # stage-one work (Guided DML's targets)
        method.prepare(model, data, Path(run_dir), torch.device("cpu"))
    samplers = method.batch_samplers(data.splits.train.labels, cfg.train)
    return cfg, model, method, opt, samplers


def batch(dataset, idx):
    items = [dataset[i] for i in idx]
    return (torch.stack([x for x, _, _ in items]), torch.stack([y for _, y, _ in items]),
            torch.tensor(idx))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", action="append", required=True, help="NAME=PRESET[:k=v,...]")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    arms = {}
    data = None
    for spec in args.arm:
        name, rest = spec.split("=", 1)
        preset, _, over = rest.partition(":")
        overrides = [*args.set, *[o for o in over.split(",") if o]]
        if data is None:
            data = build_data(config.load(preset, overrides).data)
        arms[name] = make_arm(preset, overrides, data)
    iters = {n: [iter(s) for s in a[4].values()] for n, a in arms.items()}
    times: dict[str, list[float]] = {n: [] for n in arms}
    order = list(arms)
    rng = random.Random(0)
    for step in range(args.warmup + args.steps):
        rng.shuffle(order)  # no arm always runs first (caches, turbo, neighbours' load)
        for name in order:
            _, model, method, opt, samplers = arms[name]
            batches = {k: batch(data.train, next(it)) for k, it in zip(samplers, iters[name],
                                                                        strict=True)}
            t0 = time.perf_counter()
            for losses in method.steps(model, batches, step % min(map(len, samplers.values()))):
                opt.zero_grad()
                losses["loss"].backward()
                opt.step()
            if step >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(next(iter(times.values())))
    print(f"{'arm':<16}{'median step (ms)':>18}{'ratio':>8}   threads={torch.get_num_threads()}")
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:<16}{1000 * m:>18.2f}{m / base:>8.3f}")


if __name__ == "__main__":
    main()
