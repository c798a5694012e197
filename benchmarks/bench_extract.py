"""Embedding extraction: `extract_embeddings` against a bare ``torch.no_grad`` forward loop.

Both arms run the same model (small_cnn backbone, 128-d head, eval mode) with the same batch
size on the same synthetic uint8 images, in the same process. The bare arm is the loop a user
writes over images already transformed into one float tensor:

    with torch.no_grad():
        for chunk in x.split(batch_size):
            model(chunk)

The dmlkit arm is ``extract_embeddings(model, dataset, batch_size, device, out_device=device)``
over the in-memory dataset (batched path: each batch indexed, transformed on the device by the
preset's `BatchTransform`, embedded, then one concatenation), i.e. it also pays the transform.
Repetitions alternate the arms; the result is the median time of each arm and the ratio
bare / dmlkit (1.0: no overhead).

    PYTHONPATH=src python benchmarks/bench_extract.py                     # both workloads
    PYTHONPATH=src python benchmarks/bench_extract.py --workloads fmnist --n 20000 --reps 7
    PYTHONPATH=src python benchmarks/bench_extract.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from dmlkit.config import HeadConfig, ModelConfig
from dmlkit.data.catalog import Catalog
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.transforms import build_batch_transform, build_transform
from dmlkit.engine.precision import inference_view
from dmlkit.evaluation.extract import extract_embeddings
from dmlkit.models.embedding_model import build_model

# name -> (image side, channels, eval transform preset)
WORKLOADS = {"fmnist": (28, 1, "small"), "cifar": (32, 3, "cifar")}


def dataset(workload: str, n: int) -> ImageDataset:
    """``n`` random uint8 images of the workload's size with its batched eval transform."""
    side, channels, preset = WORKLOADS[workload]
    rng = np.random.default_rng(0)
    cat = Catalog(name=workload, labels=np.arange(n) % 10, split=np.full(n, "test"),
                  images=rng.integers(0, 256, (n, side, side, channels), dtype=np.uint8))
    return ImageDataset(cat, build_transform(preset, False, None, channels),
                        build_batch_transform(preset, False, None, channels))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(workload: str, n: int, batch_size: int, reps: int, device: torch.device,
        precision: str, channels_last: bool) -> dict:
    """Median seconds of both arms over ``reps`` alternating repetitions (after a warm-up)."""
    ds = dataset(workload, n)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="small_cnn", head=HeadConfig(dim=128)),
                        WORKLOADS[workload][1]).to(device).eval()
    model = inference_view(model, precision, device, channels_last)
    x = ds.batch(torch.arange(n), device)[0]  # the bare arm's input: transformed once

    def bare() -> None:
        with torch.no_grad():
            for chunk in x.split(batch_size):
                model(chunk)

    def dmlkit() -> None:
        extract_embeddings(model, ds, batch_size, device, out_device=device)

    arms = {"bare": bare, "dmlkit": dmlkit}
    times: dict[str, list[float]] = {k: [] for k in arms}
    for rep in range(reps + 1):
        for name, arm in arms.items():
            sync(device)
            t0 = time.perf_counter()
            arm()
            sync(device)
            if rep:  # rep 0 warms up
                times[name].append(time.perf_counter() - t0)
    bare_s, dmlkit_s = (statistics.median(times[k]) for k in arms)
    ratios = [b / d for b, d in zip(times["bare"], times["dmlkit"], strict=True)]
    return {"bare": bare_s, "dmlkit": dmlkit_s, "ratio": bare_s / dmlkit_s,
            "ratio_reps": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--n", type=int, default=10_000, help="images per workload")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, n {args.n}, batch "
          f"{args.batch_size}, precision {args.precision}, channels_last {args.channels_last}, "
          f"{args.reps} reps")
    print("| workload | bare no_grad loop (s) | extract_embeddings (s) | ratio bare/dmlkit |")
    print("|---|---|---|---|")
    for w in args.workloads:
        r = run(w, args.n, args.batch_size, args.reps, device, args.precision,
                args.channels_last)
        print(f"| {w} | {r['bare']:.3f} | {r['dmlkit']:.3f} | {r['ratio']:.3f} "
              f"(reps {' '.join(f'{x:.2f}' for x in r['ratio_reps'])}) |")


if __name__ == "__main__":
    main()
