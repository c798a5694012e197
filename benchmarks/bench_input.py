"""Throughput of the per-sample input pipeline (on-disk JPEG datasets) at 224 px.

Synthetic photo-like JPEGs (smooth colour fields plus noise, quality 90) are written to a
temporary class folder; each row reads every image once per pass through a DataLoader of the
training sampler, exactly as `Trainer` builds it, with one of the 224 px training transforms:

- before: ``num_workers`` 0, full decode, loader seeds (the pipeline before config version 3);
- draft: position seeds, persistent workers, JPEG draft decoding (``data.jpeg_draft``);
- cache: as draft, images read from the pre-resized uint8 cache (``data.image_cache``), with
  ``PIL.Image.open`` replaced by a function that raises (proof that nothing is decoded).

img/s (wall clock) and img per CPU second (the per-core rate: images over the CPU time of the
main process and its workers, which other processes on a shared machine do not inflate) are
the fastest of ``--passes`` passes after a first one (workers started, cache built); the
ratio compares with the "before" row of the same transform and image size, in the same run.
torch uses one intra-op thread in every process.

    PYTHONPATH=src python benchmarks/bench_input.py
    PYTHONPATH=src python benchmarks/bench_input.py --images 400 --sizes 500x375 --workers 0 4 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dmlkit.data.build import cache_size
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.image_cache import ImageCache
from dmlkit.data.m_per_class_sampler import MPerClassBatchSampler
from dmlkit.data.registry import load_catalog
from dmlkit.data.seeded_batches import SeededBatches
from dmlkit.data.transforms import build_transform, split_to_float
from dmlkit.data.workers import available_cores, prefetch_factor

CLASSES = 10


def write_images(root: Path, n: int, width: int, height: int, seed: int = 0) -> Path:
    """``n`` JPEGs of ``width`` x ``height`` in ``CLASSES`` class folders."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        f = rng.uniform(0.01, 0.05, 3)
        base = np.stack([np.sin(x * f[0] + i), np.cos(y * f[1] - i), np.sin((x + y) * f[2])], -1)
        pixels = 128 + 90 * base + rng.normal(0, 12, base.shape)
        path = root / f"c{i % CLASSES}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return root


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) used so far by this process and the processes ``pids``."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def throughput(dataset: ImageDataset, workers: int, seeded: bool, batch_size: int,
               passes: int) -> tuple[float, float]:
    """(img/s, img per CPU second) of the fastest of ``passes`` passes over ``dataset`` after
    a first one (training sampler, batches of ``batch_size``); CPU seconds of this process and
    its workers (persistent, so the same processes in every pass)."""
    labels = dataset.labels.numpy()
    sampler = MPerClassBatchSampler(labels, batch_size=batch_size, m=4, seed=0)
    loader = DataLoader(dataset, batch_sampler=SeededBatches(sampler, 0) if seeded else sampler,
                        num_workers=workers, persistent_workers=workers > 0,
                        prefetch_factor=prefetch_factor(workers),
                        worker_init_fn=lambda _: torch.set_num_threads(1))
    rates, per_cpu = [], []
    for epoch in range(passes + 1):
        sampler.set_epoch(epoch)
        it = iter(loader)
        pids = [w.pid for w in getattr(it, "_workers", [])]
        t0, c0 = time.perf_counter(), cpu_seconds(pids)
        images = sum(len(batch[1]) for batch in it)
        rates.append(images / (time.perf_counter() - t0))
        per_cpu.append(images / max(cpu_seconds(pids) - c0, 1e-9))
    return max(rates[1:]), max(per_cpu[1:])


def refuse_decoding(*args, **kwargs):
    raise AssertionError("an image was decoded from its file")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256, help="images per size")
    p.add_argument("--sizes", nargs="+", default=["500x375", "1024x768"])
    p.add_argument("--transforms", nargs="+", default=["mdr", "sharing"])
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="worker counts (default: 0, 2 and all cores)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--passes", type=int, default=3, help="measured passes (the fastest counts)")
    p.add_argument("--uint8", action="store_true",
                   help="the workers' transform stops at the uint8 image, as the trainer's "
                   "(float conversion and normalization on the device); default: float32")
    args = p.parse_args()
    torch.set_num_threads(1)
    cores = available_cores()
    counts = args.workers or sorted({0, 2, cores})
    print(f"{cores} cores available; {args.images} images per size; batches of "
          f"{args.batch_size}; worker counts {counts}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            root = write_images(Path(tmp) / size, args.images, width, height)
            catalog = load_catalog("folder", root)
            for name in args.transforms:
                whole = build_transform(name, True)
                side = cache_size([whole, build_transform(name, False)])
                transform = split_to_float(whole)[0] if args.uint8 else whole
                t0 = time.perf_counter()
                cache = ImageCache.open(Path(tmp) / "cache", catalog.name, catalog.paths, side,
                                        num_workers=max(counts))
                built = time.perf_counter() - t0
                before = throughput(ImageDataset(catalog, transform), 0, False,
                                    args.batch_size, args.passes)
                rows.append((size, name, "before", 0, *before, before[1]))
                for workers in counts:
                    draft = ImageDataset(catalog, transform, jpeg_draft=True)
                    rate = throughput(draft, workers, True, args.batch_size, args.passes)
                    rows.append((size, name, "draft", workers, *rate, before[1]))
                    cached = ImageDataset(catalog, transform, cache=cache)
                    opener, Image.open = Image.open, refuse_decoding
                    try:
                        rate = throughput(cached, workers, True, args.batch_size, args.passes)
                    finally:
                        Image.open = opener
                    rows.append((size, name, f"cache ({side} px, built in {built:.1f} s)",
                                 workers, *rate, before[1]))
    print("\n| images | transform | pipeline | workers | img/s | img per CPU s "
          "| per CPU s x before |")
    print("|---|---|---|---|---|---|---|")
    for size, name, pipeline, workers, rate, per_cpu, before in rows:
        print(f"| {size} | {name} | {pipeline} | {workers} | {rate:.0f} | {per_cpu:.0f} "
              f"| {per_cpu / before:.2f} |")


if __name__ == "__main__":
    main()
