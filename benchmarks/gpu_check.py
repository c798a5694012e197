"""The checks to run when a GPU is lent (driver of benchmarks/gpu_check.sh).

Stages (``--only`` takes a comma-separated subset; every row has a verdict, the exit status is
1 when any enforced row fails):

- compare: each method with its paper recipe's loss, miner and head (triplet, margin, MDR,
  Sharing, Guided student, the full composition) for ``steps`` iterations through the real
  trainer step on CUDA and on the CPU, from the same weights and batches, TF32 off: the
  first step's gradients and the per-step loss curve agree at the step's scale (gpu_steps.py);
- selftest: the same comparison with injected faults (gradients x2, the first parameter's
  gradient dropped, the sign flipped) must fail;
- precision: bf16 and fp16 autocast and fp32 with channels_last on the device against the
  CPU fp32 run, at their precision's tolerance;
- deterministic: ``train.deterministic=true`` on the device: two runs bitwise equal;
- resume: ``train`` for 2 epochs against 1 epoch then ``--resume`` to 2 (deterministic):
  the same final weights and test metrics;
- throughput: `Trainer.train_epoch` against a bare PyTorch + PML loop (bench_loop.py), ResNet-50
  at 224 px bf16 and CIFAR ResNet-18 at 32 px: ratio >= 0.9;
- input: the image-file DataLoader on generated JPEGs of CUB-like sizes as the trainer builds
  it (transform mdr, 224 px) against the ResNet-50 step rate: ratio >= 1.0;
- evaluation: metrics of embeddings on the device against the CPU (kNN within 1e-3, NMI/AMI
  within the k-means tolerance of docs/metrics.md), extraction against a bare loop >= 0.9.

``--dry-run`` runs every stage at a tiny size on the CPU (the "device" is the CPU too; the
speed thresholds are reported but not enforced). The report (markdown) and the raw results
(JSON beside it) are rewritten after every stage, so a timeout leaves the finished stages.

    benchmarks/gpu_check.sh                       # on the GPU machine
    benchmarks/gpu_check.sh --dry-run --out /tmp/gpu-check.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import gpu_speed
import gpu_steps

from dmlkit import config
from dmlkit.engine.train import resumed_config, train

STAGES = ["compare", "selftest", "precision", "deterministic", "resume", "throughput", "input",
          "evaluation"]
BUDGET_S = {"compare": 150, "selftest": 30, "precision": 60, "deterministic": 45,
            "resume": 45, "throughput": 90, "input": 60, "evaluation": 60}
# name -> (preset, overrides): each method with its paper recipe's loss, miner and head
METHODS = {
    "triplet": ("triplet-small", []),  # MDR's baseline: triplet + distance-weighted, mean-distance
    "margin": ("margin-small", []),  # Sharing's baseline: margin (learnable beta) + DW, l2
    "mdr": ("mdr-small", []),
    "sharing": ("sharing-small", []),
    "guided": ("guided-paper-cifar10", ["data.protocol=closed_set",
                                        "method.guided.master_epochs=1",
                                        "method.guided.master_batch_size=64"]),
    "compose": ("compose-smoke", []),
}


@dataclass(frozen=True)
class Size:
    """The check's sizes: full on the GPU machine, tiny for ``--dry-run``."""

    steps: int
    backbone: str
    image_size: int
    batch: int


FULL, DRY = Size(20, "resnet18_cifar", 32, 32), Size(3, "small_cnn", 28, 24)


class StageTimeout(Exception):
    """A stage ran past its budget."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def method_config(name: str, size: Size, root: str, extra: list[str] = ()) -> config.Config:
    preset, overrides = METHODS[name]
    return config.load(preset, [
        # uniform random pixels: no ties in max pooling (digits' upscaled 8x8 images have
        # many, and CPU and CUDA kernels break them differently)
        "data.name=synthetic", "data.options.classes=16",
        # 8 training classes: enough images for steps x batch of every stream
        f"data.options.per_class={max(32, 2 * size.steps * size.batch // 8)}",
        f"data.options.size={size.image_size}", "data.protocol=zero_shot",
        "data.val_fraction=0", f"data.image_size={size.image_size}",
        f"model.backbone={size.backbone}",
        f"train.batch_size={size.batch}", "train.m_per_class=8",
        f"train.batches_per_epoch={size.steps}", "train.epochs=1", "train.device=cpu",
        f"run.root={root}", *overrides, *extra])


@contextmanager
def no_tf32() -> Iterator[None]:
    """TF32 off for the comparison stages (float32 matmuls and convolutions at full
    precision), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Check:
    """The state shared by the stages: CPU references are built once per method."""

    def __init__(self, device: torch.device, size: Size, root: str, dry: bool) -> None:
        self.device, self.size, self.root, self.dry = device, size, root, dry
        self.built: dict[str, gpu_steps.Built] = {}
        self.refs: dict[str, gpu_steps.Steps] = {}
        self.results: dict = {}

    def reference(self, name: str) -> tuple[gpu_steps.Built, gpu_steps.Steps]:
        if name not in self.refs:
            t0 = time.perf_counter()
            self.built[name] = gpu_steps.build(method_config(name, self.size, self.root),
                                               self.size.steps, self.root)
            with no_tf32():
                self.refs[name] = gpu_steps.run_steps(self.built[name], torch.device("cpu"))
            log(f"  CPU reference {name}: {len(self.refs[name].losses)} steps, "
                f"{time.perf_counter() - t0:.1f} s")
        return self.built[name], self.refs[name]

    def variant(self, built: gpu_steps.Built, **train: object) -> config.Config:
        cfg = built.cfg.model_copy(deep=True)
        for k, v in train.items():
            setattr(cfg.train, k, v)
        return cfg


def _row(name: str, cmp: dict, tol: gpu_steps.Tolerance) -> dict:
    return {"run": name, "steps": cmp["steps"],
            "loss CPU first/last": f"{cmp['ref_first_loss']:.5f} / {cmp['ref_last_loss']:.5f}",
            "loss device first/last": f"{cmp['got_first_loss']:.5f} / "
                                      f"{cmp['got_last_loss']:.5f}",
            "grad diff / scale (bound)": f"{cmp['grad_rel']:.1e} "
                                         f"({'none' if tol.grad is None else f'{tol.grad:.0e}'})",
            "first loss diff (bound)": f"{cmp['first_loss_rel']:.1e} ({tol.first_loss:.0e})",
            "curve diff (bound)": f"{cmp['curve_rel']:.1e} ({tol.curve:.0e})",
            "ok": cmp["ok"], "raw": cmp}


def stage_compare(c: Check) -> list[dict]:
    rows = []
    for name in METHODS:
        built, ref = c.reference(name)
        with no_tf32():
            got = gpu_steps.run_steps(built, c.device)
        row = _row(name, gpu_steps.compare(got, ref, gpu_steps.FP32), gpu_steps.FP32)
        caught, total = gpu_steps.detectable(ref, gpu_steps.FP32)
        row["dropped grad caught"] = f"{caught}/{total} params"
        rows.append(row)
        log(f"  {name}: {'ok' if row['ok'] else 'FAIL'} (grad {row['raw']['grad_rel']:.1e})")
    return rows


def stage_selftest(c: Check) -> list[dict]:
    """Each fault must make the fp32 comparison fail (row ok = the fault was detected)."""
    rows = []
    for method in ("triplet", "sharing"):
        built, ref = c.reference(method)
        for fault, inject in gpu_steps.FAULTS.items():
            with no_tf32():
                got = gpu_steps.run_steps(built, c.device, fault=inject)
            cmp = gpu_steps.compare(got, ref, gpu_steps.FP32)
            row = _row(f"{method}, {fault}", cmp, gpu_steps.FP32)
            row["ok"] = not cmp["ok"]
            row["detected by"] = ", ".join(k for k in ("grad", "first_loss", "curve")
                                           if not cmp[f"{k}_ok"]) or "nothing"
            rows.append(row)
            log(f"  {method} / {fault}: detected by {row['detected by']}")
    return rows


def stage_precision(c: Check) -> list[dict]:
    rows = []
    for precision, channels_last in (("fp32", True), ("bf16", True), ("fp16", True),
                                     ("bf16", False)):
        tol = gpu_steps.TOLERANCES[precision]
        for name in METHODS:
            built, ref = c.reference(name)
            cfg = c.variant(built, precision=precision, channels_last=channels_last)
            with no_tf32():
                got = gpu_steps.run_steps(built, c.device, cfg)
            label = f"{name} {precision}{' channels_last' if channels_last else ''}"
            rows.append(_row(label, gpu_steps.compare(got, ref, tol), tol))
            log(f"  {label}: {'ok' if rows[-1]['ok'] else 'FAIL'}")
    return rows


def stage_deterministic(c: Check) -> list[dict]:
    """Two runs with train.deterministic=true on the device (the device's own random draws,
    no `cpu_draws`): the same losses and weights, bit for bit."""
    rows = []
    for name in METHODS:
        built, _ = c.reference(name)
        cfg = c.variant(built, deterministic=True)
        try:
            a, b = (gpu_steps.run_steps(built, c.device, cfg, draws=False) for _ in range(2))
            same, error = gpu_steps.identical(a, b), ""
        except Exception as e:  # e.g. an op without a deterministic CUDA kernel
            same, error = False, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        rows.append({"run": name, "bitwise equal": same, "error": error, "ok": same})
        log(f"  {name}: {'ok' if same else 'FAIL'} {error}")
    return rows


def stage_resume(c: Check) -> list[dict]:
    """The full composition through `train`: 2 epochs straight against 1 epoch and a resume."""
    extra = [f"train.device={c.device}", "train.deterministic=true", "train.epochs=2",
             f"train.batches_per_epoch={max(2, c.size.steps // 2)}", "eval.nmi=false"]
    cfg = method_config("compose", c.size, c.root, [*extra, "run.name=straight"])
    straight = train(cfg)
    first = train(method_config("compose", c.size, c.root,
                                [*extra, "train.epochs=1", "run.name=resumed"]))
    resumed = train(resumed_config(first.path, ["train.epochs=2"]), resume=first.path)
    from safetensors.torch import load_file

    a, b = (load_file(r.path / "model.safetensors") for r in (straight, resumed))
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fa, fb = (r.read_json("metrics.json")["final"] for r in (straight, resumed))
    return [{"run": "compose, 2 epochs vs 1 + resume", "weights bitwise equal": same,
             "final MAP@R straight / resumed": f"{fa['map_at_r']:.4f} / {fb['map_at_r']:.4f}",
             "ok": same and fa == fb}]


STAGE_FUNCTIONS: dict[str, Callable[[Check], list[dict]]] = {
    "compare": stage_compare, "selftest": stage_selftest, "precision": stage_precision,
    "deterministic": stage_deterministic, "resume": stage_resume,
    "throughput": gpu_speed.stage_throughput, "input": gpu_speed.stage_input,
    "evaluation": gpu_speed.stage_evaluation}
TITLES = {
    "compare": "CUDA vs CPU through the real trainer step, fp32, TF32 off",
    "selftest": "Self-test: injected faults must fail the fp32 comparison (ok = detected)",
    "precision": "Autocast and channels_last on the device vs the CPU fp32 run",
    "deterministic": "Deterministic mode on the device: two runs bitwise equal",
    "resume": "Resume from a checkpoint (deterministic): same weights and metrics",
    "throughput": "Training throughput vs a bare PyTorch + PML loop (img/s; ok: ratio >= 0.9)",
    "input": "Image-file DataLoader on JPEGs vs the model's step rate (ok: ratio >= 1.0)",
    "evaluation": "Evaluation on the device vs the CPU",
}


def _cell(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/")


def render(results: dict, header: list[str]) -> str:
    text = [*header, ""]
    for stage, res in results["stages"].items():
        text += [f"## {stage}: {TITLES[stage]}", "",
                 f"{res['seconds']:.1f} s (budget {res['budget_s']} s). "
                 f"{'ok' if res['ok'] else 'FAIL'}.", ""]
        if res.get("error"):
            text += ["```", res["error"], "```", ""]
        rows = res["rows"]
        if rows:
            cols = [k for k in rows[0] if k not in ("ok", "raw", "enforced")]
            text += ["| " + " | ".join(cols) + " | |", "|" + "---|" * (len(cols) + 1)]
            for r in rows:
                verdict = "ok" if r["ok"] else ("FAIL" if r.get("enforced", True)
                                                else "below (dry run: not enforced)")
                text.append("| " + " | ".join(_cell(r.get(k, "")) for k in cols)
                            + f" | {verdict} |")
            text.append("")
    return "\n".join(text)


def _alarm(signum, frame):
    raise StageTimeout


def run_stage(c: Check, stage: str, budget: int | None) -> dict:
    """Run one stage; ``budget`` (seconds, None: unbounded as in a dry run, whose CPU time
    says nothing of the GPU machine's) cuts it off with a failure."""
    log(f"stage {stage} (budget {budget} s)" if budget else f"stage {stage}")
    t0 = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(budget or 0)
    rows, error = [], ""
    try:
        rows = STAGE_FUNCTIONS[stage](c)
    except StageTimeout:
        error = f"stage {stage} ran past its budget of {budget} s"
    except Exception:
        error = traceback.format_exc(limit=6)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - t0
    ok = not error and all(r["ok"] or not r.get("enforced", True) for r in rows)
    log(f"stage {stage}: {'ok' if ok else 'FAIL'} in {seconds:.1f} s"
        + (f"\n{error}" if error else ""))
    return {"ok": ok, "seconds": seconds, "budget_s": budget, "error": error, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--out", type=Path, default=None,
                    help="report path (default docs/results/gpu-check.md; dry run: "
                         "a temporary folder); the JSON goes beside it")
    ap.add_argument("--only", default=",".join(STAGES),
                    help=f"comma-separated stages ({','.join(STAGES)})")
    ap.add_argument("--steps", type=int, default=None, help="iterations per comparison run")
    args = ap.parse_args(argv)
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry-run to exercise it on the CPU)",
              file=sys.stderr)
        return 2
    device = torch.device("cpu" if dry else "cuda")
    size = DRY if dry else FULL
    if args.steps:
        size = Size(args.steps, size.backbone, size.image_size, size.batch)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        out = args.out or (Path(root) / "gpu-check.md" if dry else
                           Path("docs/results/gpu-check.md"))
        out.parent.mkdir(parents=True, exist_ok=True)
        name = "CPU (dry run)" if dry else torch.cuda.get_device_name(0)
        command = "bash benchmarks/gpu_check.sh " + " ".join(argv or sys.argv[1:])
        header = [f"# GPU check{' (dry run)' if dry else ''}", "",
                  f"Device: {name}; torch {torch.__version__}; Python "
                  f"{platform.python_version()}; {os.cpu_count()} CPU cores; "
                  f"{platform.platform()}.", f"Command: `{command.strip()}`.",
                  f"Comparison runs: {size.steps} iterations, {size.backbone} at "
                  f"{size.image_size} px, batch {size.batch}, synthetic images."]
        results = {"device": name, "torch": torch.__version__, "dry_run": dry,
                   "command": command.strip(), "size": size.__dict__, "stages": {}}
        check = Check(device, size, root, dry)
        check.results = results
        for stage in stages:
            results["stages"][stage] = run_stage(check, stage, None if dry else BUDGET_S[stage])
            results["seconds"] = time.perf_counter() - t_start
            report = render(results, [*header, f"Total {results['seconds']:.0f} s."])
            out.write_text(report + "\n")
            out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
        print(report)
        log(f"report: {out}")
    failed = [s for s, r in results["stages"].items() if not r["ok"]]
    log(f"{'FAILED: ' + ', '.join(failed) if failed else 'all stages ok'} "
        f"({time.perf_counter() - t_start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
