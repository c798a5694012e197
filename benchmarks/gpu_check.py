"""The checks to run when a GPU is lent (driver of benchmarks/gpu_check.sh).

1. CUDA smoke: one iteration of each method (metric, MDR, Sharing, Guided) on the same
   batches on CUDA and on the CPU: the losses and the weights after the optimizer step agree
   within a tolerance scaled to their magnitude (TF32 off).
2. Precision: a short digits run in fp32 and in bf16 on CUDA; final MAP@R and P@1 close.
3. Throughput: dmlkit's Trainer against the bare PyTorch + PML loop of bench_loop.py
   (interleaved repetitions, median ratio), ResNet-50 at 224 px and CIFAR ResNet-18 at 32 px
   on synthetic images, fp32 and bf16, channels_last.
4. Evaluation on the device: the metrics of clustered embeddings held on CUDA (topk ranking,
   torch k-means) against the same embeddings on the CPU (numpy ranking, faiss k-means), and
   `extract_embeddings` against a bare no_grad loop (bench_extract.py).

Writes a markdown report (default docs/results/gpu-check.md). ``--dry-run`` runs every step at
a tiny size on the CPU (the "CUDA" side is then the CPU too) and writes nowhere by default.

    benchmarks/gpu_check.sh                 # on the GPU machine
    benchmarks/gpu_check.sh --dry-run --out /tmp/gpu-check.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_extract
from bench_evaluation import make_data
from bench_loop import AnchorArm, DmlkitArm

from dmlkit import config
from dmlkit.data.device_batches import DeviceBatches
from dmlkit.engine.train import build_components, train
from dmlkit.engine.trainer import build_optimizer

METHODS = {"metric": [], "mdr": ["method.name=mdr"], "sharing": ["method.name=sharing"],
           "guided": ["method.name=guided", "method.guided.master_epochs=1", "data.image_size=28"]}
SMOKE_REL = 1e-3  # float32 on two devices: different kernels and summation orders


@contextmanager
def cpu_draws(seed: int = 0) -> Iterator[None]:
    """``torch.multinomial`` (Sharing's distance-weighted negatives) drawn on the CPU from one
    seeded generator, so that the CUDA and the CPU iteration draw alike."""
    original = torch.multinomial
    generator = torch.Generator().manual_seed(seed)

    def draw(weights, num_samples, replacement=False, **_):  # its own generator ignored
        return original(weights.detach().float().cpu(), num_samples, replacement,
                        generator=generator).to(weights.device)

    torch.multinomial = draw
    try:
        yield
    finally:
        torch.multinomial = original


def iteration(overrides: list[str], device: torch.device, root: str) -> tuple[list, dict]:
    """Losses of one trainer iteration (every step of the method) and the weights after it.
    Stage-one work (Guided DML's master) runs on the CPU, so both devices start alike."""
    cfg = config.load("digits-smoke", [f"run.root={root}", *overrides])
    data, method, model = build_components(cfg)
    with tempfile.TemporaryDirectory() as run_dir:
        method.prepare(model, data, Path(run_dir), torch.device("cpu"))
    model, method = model.to(device), method.to(device)
    optimizer = build_optimizer(cfg, model, method)
    batches = {}
    for stream, (name, sampler) in enumerate(
            method.batch_samplers(data.splits.train.labels, cfg.train).items()):
        sampler.set_epoch(0)
        batches[name] = next(iter(DeviceBatches(data.train, sampler, device, 0, stream)))
    model.train()
    method.train()
    losses = []
    with cpu_draws():
        for step in method.steps(model, batches, 0):
            losses.append({k: float(v.detach()) for k, v in step.items()})
            optimizer.zero_grad(set_to_none=True)
            step["loss"].backward()
            optimizer.step()
    return losses, {k: v.detach().cpu() for k, v in model.state_dict().items()}


def close(a: torch.Tensor, b: torch.Tensor, scale: float) -> bool:
    return bool(((a.double() - b.double()).abs() <= SMOKE_REL * (scale + b.double().abs())).all())


def smoke(device: torch.device, root: str) -> list[str]:
    """Rows of the CUDA-vs-CPU table."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for name, overrides in METHODS.items():
        got, got_w = iteration(overrides, device, root)
        want, want_w = iteration(overrides, torch.device("cpu"), root)
        loss_ok = all(close(torch.tensor(g[k]), torch.tensor(w[k]), abs(w[k]))
                      for g, w in zip(got, want, strict=True) for k in w)
        floats = [k for k, v in want_w.items() if v.is_floating_point()]
        scale = max(float(want_w[k].abs().max()) for k in floats)
        weights_ok = all(close(got_w[k], want_w[k], scale) for k in floats)
        worst = max(float((got_w[k].double() - want_w[k].double()).abs().max()) for k in floats)
        rows.append(f"| {name} | {len(want)} | {want[0]['loss']:.5f} | {got[0]['loss']:.5f} | "
                    f"{worst:.2e} | {'ok' if loss_ok and weights_ok else 'FAIL'} |")
    return rows


def precision(device: torch.device, root: str, epochs: int) -> list[str]:
    """Rows of the fp32-vs-bf16 table (final test metrics of the same run)."""
    finals = {}
    for p in ("fp32", "bf16"):
        cfg = config.load("digits-smoke", [f"run.root={root}", f"run.name={p}",
                                           f"train.precision={p}", f"train.epochs={epochs}",
                                           f"train.device={device}", "eval.nmi=false"])
        finals[p] = train(cfg).read_json("metrics.json")["final"]
    rows = []
    for key in ("precision_at_1", "map_at_r"):
        diff = abs(finals["bf16"][key] - finals["fp32"][key])
        rows.append(f"| {key} | {finals['fp32'][key]:.4f} | {finals['bf16'][key]:.4f} | "
                    f"{diff:.4f} | {'ok' if diff <= 0.05 else 'FAIL'} |")
    return rows


def throughput(device: torch.device, root: str, dry: bool) -> list[str]:
    """Rows of the dmlkit-vs-bare-loop table."""
    if dry:
        workloads = {"resnet50 (32 px, dry run)": ("resnet50", 32, 16, 4, 1, 1, 0)}
    else:  # backbone, size, batch, per class, batches per rep, reps, warm-up reps
        workloads = {"resnet50 224 px": ("resnet50", 224, 64, 8, 20, 5, 1),
                     "resnet18_cifar 32 px": ("resnet18_cifar", 32, 64, 8, 50, 5, 1)}
    rows = []
    for label, (backbone, size, batch, m, batches, reps, warmup) in workloads.items():
        for p in ("fp32", "bf16"):
            cfg = config.load("fashion-mnist-demo", [
                f"run.root={root}", "data.name=synthetic", "data.protocol=zero_shot",
                "data.options.classes=32", "data.options.per_class=32",
                f"data.options.size={size}", f"model.backbone={backbone}",
                f"train.batch_size={batch}", f"train.m_per_class={m}",
                f"train.batches_per_epoch={batches}", f"train.device={device}",
                f"train.precision={p}", "train.channels_last=true", "train.epochs=1000"])
            arms = {"dmlkit": DmlkitArm(cfg)}
            arms["anchor"] = AnchorArm(cfg, arms["dmlkit"].data)
            rates: dict[str, list[float]] = {k: [] for k in arms}
            for rep in range(warmup + reps):
                for k, arm in arms.items():
                    rate = arm()
                    if rep >= warmup:
                        rates[k].append(rate)
            ratio = statistics.median(a / b for a, b in zip(rates["dmlkit"], rates["anchor"],
                                                            strict=True))
            rows.append(f"| {label} | {p} | {statistics.median(rates['dmlkit']):.0f} | "
                        f"{statistics.median(rates['anchor']):.0f} | {ratio:.3f} |")
    return rows


def evaluation(device: torch.device, dry: bool) -> list[str]:
    """Rows of the device-vs-CPU evaluation table and of the extraction ratios: kNN metrics
    agree up to float32 ranking ties, NMI/AMI up to the k-means draws (faiss's on the CPU,
    a torch.Generator's on the device)."""
    from dmlkit.evaluation import evaluate

    data = make_data("10k-10" if dry else "60k-100", 128)
    x, y = torch.from_numpy(data["query"]), torch.from_numpy(data["query_labels"])
    results, seconds = {}, {}
    for where in ("cpu", device):
        q = x.to(where)
        t0 = time.perf_counter()
        results[str(where)] = evaluate(q, y, kmeans_seed=1234)
        seconds[str(where)] = time.perf_counter() - t0
    cpu, dev = results["cpu"], results[str(device)]
    rows = []
    for key, bound in (("precision_at_1", 1e-3), ("map_at_r", 1e-3), ("nmi", 0.02),
                       ("ami", 0.02)):
        diff = abs(dev[key] - cpu[key])
        rows.append(f"| {key} | {cpu[key]:.4f} | {dev[key]:.4f} | {diff:.4f} | "
                    f"{'ok' if diff <= bound else 'FAIL'} |")
    rows.append(f"| seconds | {seconds['cpu']:.2f} | {seconds[str(device)]:.2f} | | |")
    n, reps = (1000, 1) if dry else (60_000, 5)
    for workload in bench_extract.WORKLOADS:
        for p in ("fp32", "bf16"):
            r = bench_extract.run(workload, n, 512, reps, device, p, p == "bf16")
            rows.append(f"| extract {workload} {n} images, {p} (s, bare / dmlkit) | "
                        f"{r['bare']:.3f} | {r['dmlkit']:.3f} | ratio {r['ratio']:.3f} | |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--out", type=Path, default=None,
                    help="report path (default docs/results/gpu-check.md; dry run: none)")
    args = ap.parse_args()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device (use --dry-run to exercise it on the CPU)")
    device = torch.device("cpu" if dry else "cuda")
    out = args.out or (None if dry else Path("docs/results/gpu-check.md"))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        sections = [
            ("CUDA vs CPU, one iteration per method", "| method | steps | CPU loss | device "
             "loss | max weight diff | |\n|---|---|---|---|---|---|", smoke(device, root)),
            ("fp32 vs bf16, digits-smoke final test metrics", "| metric | fp32 | bf16 | diff "
             "| |\n|---|---|---|---|---|", precision(device, root, 1 if dry else 4)),
            ("Throughput vs a bare PyTorch + PML loop (img/s, median of interleaved reps)",
             "| workload | precision | dmlkit | bare loop | ratio |\n|---|---|---|---|---|",
             throughput(device, root, dry)),
            ("Evaluation on the device vs the CPU (clustered embeddings, d=128)",
             "| metric | CPU | device | diff | |\n|---|---|---|---|---|",
             evaluation(device, dry)),
        ]
    name = "CPU (dry run)" if dry else torch.cuda.get_device_name(0)
    text = [f"# GPU check{' (dry run)' if dry else ''}", "",
            f"Device: {name}; torch {torch.__version__}; {platform.platform()}. "
            f"Command: `benchmarks/gpu_check.sh{' --dry-run' if dry else ''}` "
            f"({time.perf_counter() - t0:.0f} s).", ""]
    for title, header, rows in sections:
        text += [f"## {title}", "", header, *rows, ""]
    report = "\n".join(text)
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
    if "FAIL" in report:
        sys.exit(1)


if __name__ == "__main__":
    main()
