"""Compare training presets over several seeds: mean and 95% CI of test metrics.

Every arm is a dmlkit preset plus overrides, trained once per seed at the same budget; the
untrained network's metrics are printed beside the trained ones. Example (the MDR experiment):

    python benchmarks/compare_methods.py --seeds 5 \
        --arm triplet=triplet-small --arm triplet+l2=triplet-small:model.head.output=l2 \
        --arm triplet+mdr=mdr-small --out docs/results/mdr-fashion-mnist.md

An arm is NAME=PRESET[:key=value[,key=value...]].
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

from dmlkit import config
from dmlkit.engine.train import train
from dmlkit.protocol.aggregate import format_ci

METRICS = [("precision_at_1", "R@1"), ("r_precision", "R-Prec"), ("map_at_r", "MAP@R"),
           ("nmi", "NMI")]


def parse_arm(spec: str) -> tuple[str, str, list[str]]:
    name, rest = spec.split("=", 1)
    preset, _, over = rest.partition(":")
    return name, preset, [o for o in over.split(",") if o]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", action="append", required=True, help="NAME=PRESET[:k=v,...]")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], help="override for every arm")
    ap.add_argument("--runs", default="runs/compare", help="root of the run directories")
    ap.add_argument("--out", type=Path, help="write the Markdown table here")
    ap.add_argument("--title", default="Comparison")
    args = ap.parse_args()

    quiet = Console(file=io.StringIO())
    runs = Path(args.runs) / (args.out.stem if args.out else "compare")
    results: dict[str, dict] = {}
    for spec in args.arm:
        name, preset, over = parse_arm(spec)
        rows, seconds = [], []
        for seed in range(args.seeds):
            cfg = config.load(preset, [*args.set, *over, f"train.seed={seed}",
                                       f"run.root={runs}", f"run.name={name}-s{seed}"])
            t0 = time.perf_counter()
            run = train(cfg, console=quiet)
            seconds.append(time.perf_counter() - t0)
            rows.append(json.loads((run.path / "metrics.json").read_text()))
            final = rows[-1]["final"]
            print(f"{name} seed {seed}: MAP@R {final['map_at_r']:.4f} "
                  f"(untrained {rows[-1]['untrained']['map_at_r']:.4f}) "
                  f"{seconds[-1]:.0f} s", flush=True)
        results[name] = {"preset": preset, "overrides": over, "runs": rows, "seconds": seconds}
        if args.out:  # after every arm, so an interrupted comparison keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(table(results, args.seeds, args.title))

    print(table(results, args.seeds, args.title))


def table(results: dict, seeds: int, title: str) -> str:
    """The Markdown table of all arms finished so far."""
    header = ["arm", "model"] + [h for _, h in METRICS] + ["time/run (s)"]
    lines = [f"## {title}", "",
             f"Command: `python {shlex.join(sys.argv)}`", "",
             f"Hardware: {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}; "
             f"{seeds} seeds; mean ± 95% CI (Student t).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    labels = {"untrained": "untrained", "final": "trained",
              "final_shared": "trained, shared head", "final_concat": "trained, both heads"}
    for name, r in results.items():
        for which in [w for w in labels if w in r["runs"][0]]:
            cells = [format_ci([run[which].get(k, float("nan")) for run in r["runs"]])
                     for k, _ in METRICS]
            t = f"{sum(r['seconds']) / len(r['seconds']):.0f}" if which == "final" else ""
            label = labels[which]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + f" | {t} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
