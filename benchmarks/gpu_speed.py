"""The speed and evaluation stages of the GPU check (benchmarks/gpu_check.py): training
throughput against a bare loop, the image-file input pipeline against the step rate, and
evaluation on the device against the CPU. Every row has a threshold; under ``--dry-run`` the
speed thresholds are reported, not enforced (tiny sizes on a shared CPU)."""

from __future__ import annotations

import shutil
import statistics
import time
from multiprocessing import get_context
from pathlib import Path

import bench_extract
import bench_input
import torch
from bench_evaluation import make_data
from bench_loop import AnchorArm, DmlkitArm

from dmlkit import config
from dmlkit.data.build import build_data
from dmlkit.data.workers import loader_workers

LOOP_RATIO = 0.9  # dmlkit's loop >= 0.9x the bare PyTorch + PML loop
INPUT_RATIO = 1.0  # the input pipeline >= the model's step rate
KNN_TOL = 1e-3  # float32 ranking ties on two devices
KMEANS_TOL = 0.02  # NMI/AMI: another k-means draw (docs/metrics.md: up to 0.0074 apart)
# label -> (backbone, size, batch, per class, batches per rep, reps, precision)
WORKLOADS = {"resnet50 224 px": ("resnet50", 224, 64, 8, 20, 5, "bf16"),
             "resnet18_cifar 32 px": ("resnet18_cifar", 32, 64, 8, 50, 5, "bf16"),
             "resnet18_cifar 32 px fp32": ("resnet18_cifar", 32, 64, 8, 50, 5, "fp32")}
DRY_WORKLOADS = {"resnet50 32 px (dry run)": ("resnet50", 32, 16, 4, 2, 1, "bf16")}


def loop_config(root: str, device: str, backbone: str, size: int, batch: int, m: int,
                batches: int, precision: str) -> config.Config:
    """bench_loop's workload (triplet + semihard miner, Adam) on synthetic images."""
    return config.load("fashion-mnist-demo", [
        f"run.root={root}", "data.name=synthetic", "data.protocol=zero_shot",
        "data.options.classes=32", "data.options.per_class=32", f"data.options.size={size}",
        f"model.backbone={backbone}", f"train.batch_size={batch}", f"train.m_per_class={m}",
        f"train.batches_per_epoch={batches}", f"train.device={device}",
        f"train.precision={precision}", "train.channels_last=true", "train.epochs=1000"])


def stage_throughput(c) -> list[dict]:
    rows = []
    for label, (backbone, size, batch, m, batches, reps, p) in (
            DRY_WORKLOADS if c.dry else WORKLOADS).items():
        cfg = loop_config(c.root, str(c.device), backbone, size, batch, m, batches, p)
        arms = {"dmlkit": DmlkitArm(cfg)}
        arms["bare"] = AnchorArm(cfg, arms["dmlkit"].data)
        rates: dict[str, list[float]] = {k: [] for k in arms}
        for rep in range(1 + reps):  # one warm-up repetition
            for k, arm in arms.items():
                rate = arm()
                if rep:
                    rates[k].append(rate)
        ratio = statistics.median(a / b for a, b in zip(rates["dmlkit"], rates["bare"],
                                                        strict=True))
        dmlkit = statistics.median(rates["dmlkit"])
        rows.append({"workload": label, "precision": p, "dmlkit img/s": round(dmlkit),
                     "bare img/s": round(statistics.median(rates["bare"])),
                     "ratio (bound)": f"{ratio:.3f} (>= {LOOP_RATIO})",
                     "ok": ratio >= LOOP_RATIO, "enforced": not c.dry,
                     "raw": {"rates": rates, "ratio": ratio}})
        c.results.setdefault("step_rates", {})[backbone] = dmlkit
        print(f"  {label} {p}: dmlkit {dmlkit:.0f} img/s, ratio {ratio:.3f}", flush=True)
    return rows


def _write_part(args: tuple) -> None:
    root, n, width, height, seed = args
    bench_input.write_images(Path(root), n, width, height, seed)


def write_jpegs(root: Path, n: int, width: int, height: int, processes: int) -> Path:
    """``n`` JPEGs in class folders, written by ``processes`` processes; part ``k``'s
    classes become classes of group ``k % 4`` (10 classes per group)."""
    parts = [(root / f"part{k}", n // processes, width, height, k) for k in range(processes)]
    with get_context("spawn").Pool(processes) as pool:
        pool.map(_write_part, parts)
    out = root / "images"
    for k, (part, *_) in enumerate(parts):
        for cls in sorted(part.iterdir()):
            folder = out / f"g{k % 4}{cls.name}"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.move(str(cls), folder / part.name)
    return out


def _step_rate(c, backbone: str) -> float:
    """The dmlkit training rate of ``backbone`` from the throughput stage, else measured."""
    rates = c.results.setdefault("step_rates", {})
    if backbone not in rates:
        spec = next(v for v in (DRY_WORKLOADS if c.dry else WORKLOADS).values()
                    if v[0] == backbone)
        _, size, batch, m, batches, _, p = spec
        arm = DmlkitArm(loop_config(c.root, str(c.device), backbone, size, batch, m,
                                    batches, p))
        arm()
        rates[backbone] = statistics.median(arm() for _ in range(2))
    return rates[backbone]


def stage_input(c) -> list[dict]:
    """The training DataLoader of an on-disk JPEG dataset (CUB-like 500x375 images, transform
    mdr at 224 px, num_workers auto) as `Trainer` builds it, without and with the image
    cache, against the ResNet-50 bf16 training rate."""
    n, (w, h), passes = (64, (125, 94), 1) if c.dry else (1024, (500, 375), 2)
    step_rate = _step_rate(c, "resnet50")
    t0 = time.perf_counter()
    images = write_jpegs(Path(c.root) / "jpegs", n, w, h, 2 if c.dry else 16)
    print(f"  {n} JPEGs of {w}x{h} written in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for cache in (False, True):
        cfg = config.load("mdr-paper-cub", [
            "data.name=folder", f"data.root={images}", "data.protocol=zero_shot",
            f"data.image_cache={str(cache).lower()}", f"run.cache_dir={c.root}/cache",
            "model.pretrained=false", f"train.device={c.device}"])
        data = build_data(cfg.data, cfg.train.seed, cfg.run.cache_path / "images")
        workers = loader_workers(cfg.data.num_workers, data.train)
        batch = min(64, 4 * len(set(data.train.labels.tolist())))  # 4 per class
        rate, per_cpu = bench_input.throughput(data.train, workers, True, batch, passes)
        ratio = rate / step_rate
        rows.append({"pipeline": "jpeg_draft, image_cache (default: auto)" if cache else
                     "jpeg_draft, image_cache false",
                     "images": f"{len(data.train)} x {w}x{h}", "batch": batch,
                     "workers": workers,
                     "input img/s": round(rate), "img per CPU s": round(per_cpu),
                     "resnet50 bf16 step img/s": round(step_rate),
                     "ratio (bound)": f"{ratio:.2f} (>= {INPUT_RATIO})",
                     # the default pipeline (image_cache auto: cached where it fits) must
                     # feed the step; decoding every file each epoch is reported
                     "ok": ratio >= INPUT_RATIO, "enforced": cache and not c.dry})
        print(f"  input {rows[-1]['pipeline']}: {rate:.0f} img/s vs {step_rate:.0f}",
              flush=True)
    return rows


def stage_evaluation(c) -> list[dict]:
    """kNN metrics agree up to float32 ranking ties; NMI/AMI up to the k-means draw (faiss's
    on the CPU, a torch.Generator's on the device); extraction against a bare no_grad loop."""
    from dmlkit.evaluation import evaluate

    data = make_data("10k-10" if c.dry else "10k-100", 128)
    x, y = torch.from_numpy(data["query"]), torch.from_numpy(data["query_labels"])
    results, seconds = {}, {}
    for where in ("cpu", str(c.device)):
        t0 = time.perf_counter()
        results[where] = evaluate(x.to(where), y, kmeans_seed=1234)
        seconds[where] = time.perf_counter() - t0
    cpu, dev = results["cpu"], results[str(c.device)]
    rows = []
    for key, bound in (("precision_at_1", KNN_TOL), ("map_at_r", KNN_TOL), ("nmi", KMEANS_TOL),
                       ("ami", KMEANS_TOL)):
        diff = abs(dev[key] - cpu[key])
        rows.append({"what": key, "CPU": f"{cpu[key]:.4f}", "device": f"{dev[key]:.4f}",
                     "diff (bound)": f"{diff:.4f} ({bound})", "ok": diff <= bound})
    rows.append({"what": "evaluate seconds", "CPU": f"{seconds['cpu']:.2f}",
                 "device": f"{seconds[str(c.device)]:.2f}", "diff (bound)": "", "ok": True})
    n, reps = (1000, 1) if c.dry else (60_000, 3)
    for workload in bench_extract.WORKLOADS:
        for p in ("fp32", "bf16"):
            r = bench_extract.run(workload, n, 512, reps, c.device, p, p == "bf16")
            # the bare arm's input is transformed once beforehand, dmlkit transforms each
            # batch: on a GPU with a small CNN that transform is the cost measured, so the row
            # is reported, not enforced
            rows.append({"what": f"extract {workload} {n} images {p} (s; bare arm untransformed)",
                         "CPU": f"bare {r['bare']:.3f}", "device": f"dmlkit {r['dmlkit']:.3f}",
                         "diff (bound)": f"ratio {r['ratio']:.3f} (>= {LOOP_RATIO})",
                         "ok": r["ratio"] >= LOOP_RATIO, "enforced": False})
    return rows
