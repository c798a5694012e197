"""Serving benchmarks on CPU: embedding throughput and gallery search latency / recall.

1. Images per second of ``LoadedRun.embed`` (per-image channel conversion + eval transform,
   DataLoader batching) against a plain torch loop over the same model and batch size fed
   pre-transformed tensors (the loop's transform is one vectorized ``(x / 255 - 0.5) / 0.5``,
   timed with it). Untrained ``small_cnn`` models: digits 8x8 grey (1,797 images) and random
   64x64 RGB images; plus ``embed`` of the digits saved as PNG files.
2. Search over N random Gaussian vectors (d=128, L2): exact flat, IVFFlat and HNSWFlat (built
   once with dmlkit's defaults, searched at a few settings). Latency = wall time of one batched
   search of Q fresh queries / Q, and the median of single-query searches; recall@10 against
   the flat index's neighbours (`recall_at_k`).

    python benchmarks/bench_serve.py [--gallery 100000] [--queries 1000] [--threads 2]

Timings are the best of ``--repeats`` runs; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from dmlkit import config
from dmlkit.data.digits import load_digits
from dmlkit.models.embedding_model import build_model
from dmlkit.serve.index import build_faiss_index, recall_at_k
from dmlkit.serve.load import LoadedRun


def best_seconds(repeats: int, fn: Callable[..., object], *args, **kwargs) -> float:
    """Fastest of ``repeats`` calls of ``fn(*args, **kwargs)``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return min(times)


def untrained_run(channels: int) -> LoadedRun:
    cfg = config.load("digits-smoke")
    model = build_model(cfg.model, channels).eval()
    return LoadedRun(Path("untrained"), cfg, model, channels)


@torch.no_grad()
def plain_loop(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """uint8 N x C x H x W -> one vectorized normalization -> model, batch by batch."""
    x = (images.float() / 255 - 0.5) / 0.5
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def embedding_table(batch_size: int, repeats: int) -> Table:
    digits = load_digits().images  # N x 8 x 8 x 1
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2000, 64, 64, 3), dtype=np.uint8)
    table = Table(title=f"embedding throughput, CPU, batch {batch_size} (images/s)")
    for col in ("images", "model.embed (uint8 array)", "model.embed (PNG files)",
                "plain torch loop", "embed / plain"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, a in enumerate(digits):
            paths.append(Path(tmp) / f"{i:04d}.png")
            Image.fromarray(a[:, :, 0]).save(paths[-1])
        for name, arr, files in (("digits 1x8x8", digits, paths), ("random 3x64x64", rgb, None)):
            run = untrained_run(arr.shape[-1])
            nchw = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
            torch.testing.assert_close(
                run.embed(arr, batch_size, progress=False), plain_loop(run.model, nchw, 64)
            )
            n = len(arr)
            t_embed = best_seconds(repeats, run.embed, arr, batch_size, progress=False)
            t_files = (best_seconds(repeats, run.embed, files, batch_size, progress=False)
                       if files else float("nan"))
            t_plain = best_seconds(repeats, plain_loop, run.model, nchw, batch_size)
            table.add_row(f"{name} (n={n})", f"{n / t_embed:,.0f}",
                          "-" if files is None else f"{n / t_files:,.0f}",
                          f"{n / t_plain:,.0f}", f"{t_plain / t_embed:.2f}")
    return table


def search_table(n: int, n_queries: int, repeats: int) -> Table:
    rng = np.random.default_rng(0)
    d = 128
    gallery = rng.standard_normal((n, d), dtype=np.float32)
    queries = rng.standard_normal((n_queries, d), dtype=np.float32)
    singles = queries[:200]
    table = Table(title=f"search, {n:,} random vectors d={d} (L2), {n_queries} queries, k=10")
    for col in ("index", "build s", "batched ms/query", "single-query ms (median)",
                "recall@10 vs exact"):
        table.add_column(col, justify="right")
    # each index is built once with its defaults, then searched at several settings
    arms = {"flat": [{}], "ivf": [{"nprobe": 16}, {}, {"nprobe": 256}],
            "hnsw": [{}, {"ef_search": 256}]}
    exact = None
    for kind, settings in arms.items():
        t0 = time.perf_counter()
        index, defaults = build_faiss_index(gallery, faiss.METRIC_L2, kind)
        build = time.perf_counter() - t0
        for setting in settings:
            params = {**defaults, **setting}
            if kind == "ivf":
                index.nprobe = params["nprobe"]
            elif kind == "hnsw":
                index.hnsw.efSearch = params["ef_search"]
            batched = best_seconds(repeats, index.search, queries, 10)
            one = []
            for q in singles:
                t0 = time.perf_counter()
                index.search(q[None], 10)
                one.append(time.perf_counter() - t0)
            _, ids = index.search(queries, 10)
            exact = ids if exact is None else exact
            label = kind + "".join(f" {k}={v}" for k, v in params.items() if k != "ef_construction")
            table.add_row(label, f"{build:.2f}", f"{1000 * batched / n_queries:.3f}",
                          f"{1000 * float(np.median(one)):.3f}", f"{recall_at_k(ids, exact):.4f}")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch and faiss threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    console = Console(width=120)
    console.print(f"{platform.processor() or platform.machine()}, torch "
                  f"{torch.__version__} ({torch.get_num_threads()} threads), faiss "
                  f"{faiss.__version__} ({faiss.omp_get_max_threads()} threads)")
    console.print(embedding_table(args.batch_size, args.repeats))
    console.print(search_table(args.gallery, args.queries, args.repeats))


if __name__ == "__main__":
    main()
