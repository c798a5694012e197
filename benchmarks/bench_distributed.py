"""Training throughput on 1..N processes (torch.distributed) at the same global batch.

Runs ``dmlkit train PRESET --devices n`` for each n (the same seed and global batch), reads
each run's training throughput (images/s of the global batch, median over epochs after the
first) and final test MAP@R, and prints the speedup against n=1 measured in the same
invocation. On a GPU machine every process takes one GPU (NCCL); on a CPU machine each of the
n gloo processes gets ``--threads`` threads, and n=1 gets ``n_max * threads`` for a fair share.

    python benchmarks/bench_distributed.py triplet-small --devices 1 2 --set train.epochs=3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(preset: str, n: int, threads: int, overrides: list[str], root: Path) -> dict:
    name = f"n{n}"
    cmd = [sys.executable, "-m", "dmlkit", "train", preset, "--devices", str(n),
           "--set", f"run.root={root}", "--set", f"run.name={name}"]
    cmd += [x for o in overrides for x in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    with (root / name / "metrics.csv").open() as f:
        speeds = [float(r["train_img_per_s"]) for r in csv.DictReader(f)]
    final = json.loads((root / name / "metrics.json").read_text())["final"]
    steady = speeds[1:] or speeds
    return {"img_per_s": statistics.median(steady), "map_at_r": final["map_at_r"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    most = max(args.devices)
    with tempfile.TemporaryDirectory() as tmp:
        rows = {n: run(args.preset, n, args.threads * (most if n == 1 else 1), args.overrides,
                       Path(tmp)) for n in args.devices}
    base = rows[min(rows)]["img_per_s"]
    print(f"{'processes':>9} {'img/s':>9} {'speedup':>8} {'test MAP@R':>10}")
    for n, r in rows.items():
        print(f"{n:>9} {r['img_per_s']:>9.0f} {r['img_per_s'] / base:>8.2f} {r['map_at_r']:>10.4f}")


if __name__ == "__main__":
    main()
