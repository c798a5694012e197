"""Benchmark dmlkit.evaluation.evaluate against PML's AccuracyCalculator on the same embeddings.

Each measurement runs in a fresh child process, which reports the wall and CPU time of the
evaluation call and its peak resident memory (``ru_maxrss``; "+RSS" is the peak minus the RSS
after imports and data loading). PML runs with k="max_bin_count" and the metrics both tools
compute; dmlkit additionally computes Recall@{1,2,4,8}. Both run k-means with faiss's default
seed 1234. Embeddings are clustered Gaussians, L2-normalized, d=128 by default.

    PYTHONPATH=src python benchmarks/bench_evaluation.py                 # every case
    PYTHONPATH=src python benchmarks/bench_evaluation.py --cases 10k-10 inshop
    PYTHONPATH=src python benchmarks/bench_evaluation.py --cases 60k-10 --pml-at-60k

PML is skipped at 60k unless --pml-at-60k: with 10 classes its k = 6k neighbour matrices can
exhaust a 24 GB machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# name: (queries, gallery items or None for compared-to-self, classes, spread of class centres)
CASES = {
    "10k-10": (10_000, None, 10, 0.03),
    "10k-100": (10_000, None, 100, 0.045),
    "60k-10": (60_000, None, 10, 0.03),
    "60k-100": (60_000, None, 100, 0.045),
    "inshop": (14_218, 12_612, 3_985, 0.07),  # In-Shop-like: query set vs gallery set
}
METRICS = {  # dmlkit name -> PML name
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "map_at_r": "mean_average_precision_at_r",
    "nmi": "NMI",
    "ami": "AMI",
}
PML_SEED = 1234


def make_data(case: str, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Clustered unit vectors: x = normalize(spread * centre[label] + noise / sqrt(d))."""
    n_query, n_gallery, n_classes, spread = CASES[case]
    rng = np.random.default_rng(seed)
    n = n_query + (n_gallery or 0)
    labels = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n - n_classes)])
    rng.shuffle(labels)
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    x = spread * centres[labels] + rng.standard_normal((n, dim), dtype=np.float32) / dim**0.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    data = {"query": x[:n_query], "query_labels": labels[:n_query]}
    if n_gallery:
        data.update(reference=x[n_query:], reference_labels=labels[n_query:])
    return data


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(tool: str, data_path: str, out_path: str) -> None:
    """Run one tool once on the saved data and write its timings and metrics as JSON."""
    import torch

    with np.load(data_path) as f:
        arrays = {k: torch.from_numpy(f[k]) for k in f.files}
    args = [
        arrays[k] for k in ("query", "query_labels", "reference", "reference_labels") if k in arrays
    ]
    if tool == "dmlkit":
        from dmlkit.evaluation import evaluate

        def run() -> dict:
            return evaluate(*args, kmeans_seed=PML_SEED)
    else:
        import logging

        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        logging.getLogger("PML").setLevel(logging.ERROR)
        calc = AccuracyCalculator(
            include=tuple(METRICS.values()), k="max_bin_count", device=torch.device("cpu")
        )

        def run() -> dict:
            out = calc.get_accuracy(*args)
            return {ours: out[theirs] for ours, theirs in METRICS.items()}

    baseline = _rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    metrics = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {"wall": wall, "cpu": cpu, "rss": _rss_mb(), "baseline": baseline, "metrics": metrics}
    Path(out_path).write_text(json.dumps(result))


def measure(tool: str, data_path: Path) -> dict:
    out = data_path.with_suffix(f".{tool}.json")
    cmd = [sys.executable, __file__, "--child", tool, str(data_path), str(out)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--pml-at-60k", action="store_true", help="also run PML at N=60k")
    parser.add_argument("--no-pml", action="store_true", help="run dmlkit only")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import torch

    print(
        f"torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    header = f"{'case':8s} {'tool':7s} {'wall s':>7s} {'CPU s':>7s} {'peak MB':>8s} {'+RSS MB':>8s}"
    print(header + "  metrics / max |dmlkit - PML|")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            data_path = Path(tmp) / f"{case}.npz"
            np.savez(data_path, **make_data(case, args.dim))
            runs = {"dmlkit": measure("dmlkit", data_path)}
            big = CASES[case][0] + (CASES[case][1] or 0) >= 60_000
            if not args.no_pml and (not big or args.pml_at_60k):
                runs["pml"] = measure("pml", data_path)
            for tool, r in runs.items():
                shown = {k: round(v, 4) for k, v in r["metrics"].items()}
                print(
                    f"{case:8s} {tool:7s} {r['wall']:7.2f} {r['cpu']:7.2f} {r['rss']:8.0f} "
                    f"{r['rss'] - r['baseline']:8.0f}  {shown}"
                )
            if "pml" in runs:
                ours, pml = runs["dmlkit"], runs["pml"]
                diff = {k: f"{abs(ours['metrics'][k] - pml['metrics'][k]):.0e}" for k in METRICS}
                print(
                    f"{case:8s} ratio   {pml['wall'] / ours['wall']:7.1f}x"
                    f"{pml['cpu'] / ours['cpu']:7.1f}x{pml['rss'] / ours['rss']:8.1f}x"
                    f"{(pml['rss'] - pml['baseline']) / (ours['rss'] - ours['baseline']):8.1f}x"
                    f"  (PML / dmlkit)  |dmlkit - PML| {diff}"
                )
    print(f"load average at end {os.getloadavg()[0]:.2f} (2 shared cores: timings are noisy)")


if __name__ == "__main__":
    main()
