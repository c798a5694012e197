"""Start-up time of the ``dmlkit`` command line: wall seconds per command that trains nothing.

Each command runs as ``python -m dmlkit ...`` in a fresh process ``--repeats`` times; the
table gives the best and the median wall time, next to ``python -c pass`` (the interpreter
alone). The heavy libraries (torch, torchvision, timm, pytorch-metric-learning, optuna, faiss,
matplotlib, scikit-learn) are imported only by the commands that use them; find what a
command imports with ``python -X importtime -m dmlkit COMMAND``.

    python benchmarks/bench_startup.py [--repeats 5]

On a shared machine the numbers are noisy: the best of several runs is the fair one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = [
    ["--help"],
    ["presets"],
    ["datasets"],
    ["train", "--help"],
    ["evaluate-embeddings", "--help"],
    ["benchmark", "--help"],
    ["trian"],  # a usage error
    ["train", "digits-smoke", "--epochs", "3"],  # a usage error
    ["evaluate", "/nonexistent-run"],  # a user error
    # config errors: checked before torch is imported (engine/preflight.py)
    ["train", "digits-smoke", "--set", "train.epochs=0"],
    ["train", "digits-smoke", "--set", "train.batch_size=7"],
    ["train", "digits-smoke", "--set", "train.epoch=1"],
]


def seconds(argv: list[str]) -> float:
    """Wall time of one run of ``argv`` (output discarded)."""
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = [("python -c pass", [sys.executable, "-c", "pass"])]
    rows += [("dmlkit " + " ".join(c), [sys.executable, "-m", "dmlkit", *c]) for c in COMMANDS]
    print(f"{'command':<56} {'best s':>7} {'median s':>9}")
    for name, argv in rows:
        times = [seconds(argv) for _ in range(args.repeats)]
        print(f"{name:<56} {min(times):>7.2f} {statistics.median(times):>9.2f}")


if __name__ == "__main__":
    main()
