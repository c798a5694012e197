"""N real training steps of a method on one device, and their comparison with another run.

`run_steps` drives the trainer's `Stepper` (the finite checks, the gradient scaler, the
optimizer) on the method's own ``steps`` through the trainer's training view
(``train.precision`` autocast, ``train.channels_last``), from given initial weights on fixed
batches (built once on the CPU), recording each step's losses, the gradients the optimizer's
first step received and the final weights. `compare` checks one run against a reference at the
scale of the whole step: the largest gradient magnitude over every trained parameter (model and
method), the largest loss of the reference curve. `FAULTS` are the injected bugs the self-test
must catch.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from rich.console import Console

from dmlkit.base.run_dir import RunDir
from dmlkit.config import Config
from dmlkit.engine.seed import seed_everything
from dmlkit.engine.train import build_components
from dmlkit.engine.trainer import Trainer
from dmlkit.engine.trainer_checkpoints import empty_epoch


@dataclass
class Steps:
    """What `run_steps` records."""

    losses: list[dict[str, float]]  # one dict per optimizer step
    grads: dict[str, torch.Tensor]  # the first optimizer step's gradients (CPU, float64)
    weights: dict[str, torch.Tensor]  # the model's floating-point weights at the end (CPU)


@dataclass
class Built:
    """A method's initial state (prepared on the CPU) and its fixed batches."""

    cfg: Config
    model: torch.nn.Module
    method: torch.nn.Module
    data: object
    batches: list[dict[str, tuple]] = field(default_factory=list)


@dataclass(frozen=True)
class Tolerance:
    """Bounds relative to the step's scale: first-step gradients (largest |difference| over
    the largest |gradient|; None: reported, not bounded), first-step loss and the whole loss
    curve (over the curve's largest |loss|)."""

    grad: float | None
    first_loss: float
    curve: float


# fp32 with TF32 off: different kernels and summation orders only (rounding ~1e-6 of the
# scale); the curve bound is loose because Adam turns rounding noise in near-zero gradients
# into lr-sized weight differences that grow over the steps.
FP32 = Tolerance(grad=1e-3, first_loss=1e-4, curve=2e-2)
# autocast: the forward's rounding reaches single gradient elements at up to ~0.3 of the scale
# (measured on the CPU), so only the loss curves are bounded
BF16 = Tolerance(grad=None, first_loss=3e-2, curve=1e-1)  # 8-bit mantissa in the forward
FP16 = Tolerance(grad=None, first_loss=1e-2, curve=1e-1)  # 11-bit mantissa
TOLERANCES = {"fp32": FP32, "bf16": BF16, "fp16": FP16}


def _scale2(grads: dict[str, torch.Tensor]) -> None:
    for g in grads.values():
        g.mul_(2)


def _drop_first(grads: dict[str, torch.Tensor]) -> None:
    next(iter(grads.values())).zero_()  # the model's first parameter (the stem)


def _flip(grads: dict[str, torch.Tensor]) -> None:
    for g in grads.values():
        g.neg_()


# injected into every optimizer step, between backward and the optimizer
FAULTS: dict[str, Callable[[dict[str, torch.Tensor]], None]] = {
    "gradients x2": _scale2, "first parameter's gradient dropped": _drop_first,
    "gradient sign flipped": _flip}


@contextmanager
def cpu_draws(seed: int = 0) -> Iterator[None]:
    """``torch.multinomial`` (distance-weighted sampling) drawn on the CPU from one seeded
    generator, so that runs on two devices draw alike (their generators differ)."""
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


def build(cfg: Config, steps: int, root: str) -> Built:
    """Data, model and method of ``cfg`` (CPU, seeded), the method prepared on the CPU (Guided
    DML's master and targets) and ``steps`` iterations of batches from the trainer's loaders."""
    data, method, model = build_components(cfg)
    built = Built(cfg, model, method, data)
    trainer = _trainer(built, torch.device("cpu"), root)
    method.prepare(trainer.model, data, trainer.run.path, torch.device("cpu"))
    loaders = trainer._loaders()
    for _, streams in zip(range(steps), zip(*(iter(x) for x in loaders.values()), strict=False),
                          strict=False):
        batches = {k: tuple(t.clone() if torch.is_tensor(t) else t for t in b)
                   for k, b in zip(loaders, streams, strict=True)}
        for name, to_float in trainer._to_float.items():  # uint8 file batches, as train_epoch
            images, *rest = batches[name]
            batches[name] = (to_float(images), *rest)
        built.batches.append(batches)
    trainer._kept.clear()
    if len(built.batches) < steps:
        raise RuntimeError(f"only {len(built.batches)} batches for {steps} steps")
    return built


def _trainer(built: Built, device: torch.device, root: str, cfg: Config | None = None,
             model=None, method=None) -> Trainer:
    cfg = (cfg or built.cfg).model_copy(deep=True)
    cfg.run.root, cfg.run.name, cfg.train.device = root, None, str(device)
    return Trainer(cfg, built.data, model if model is not None else built.model,
                   method if method is not None else built.method, RunDir.create(cfg), device,
                   Console(quiet=True))


def run_steps(built: Built, device: torch.device, cfg: Config | None = None,
              fault: Callable | None = None, draws: bool = True) -> Steps:
    """Every step of ``len(built.batches)`` iterations on ``device`` from ``built``'s initial
    weights, with ``cfg`` (default ``built.cfg``: precision, channels_last, deterministic);
    ``fault`` edits the gradients before every optimizer step; ``draws``: `cpu_draws`."""
    cfg = cfg or built.cfg
    with tempfile.TemporaryDirectory() as root:
        trainer = _trainer(built, device, root, cfg, copy.deepcopy(built.model),
                           copy.deepcopy(built.method))
        named = {f"model.{n}": p for n, p in trainer.model.named_parameters()}
        named |= {f"method.{n}": p for n, p in trainer.method.named_parameters()}
        first: dict[str, torch.Tensor] = {}

        def before_step(optimizer, *_):
            grads = {n: p.grad for n, p in named.items() if p.grad is not None}
            if fault is not None:
                fault(grads)
            if not first:
                first.update({n: g.detach().double().cpu() for n, g in grads.items()})

        trainer.optimizer.register_step_pre_hook(before_step)
        seed_everything(cfg.train.seed, cfg.train.deterministic, device)  # as Trainer.fit
        for sampler in trainer.samplers.values():
            sampler.set_epoch(0)
        trainer.model.train()
        trainer.method.train()
        trainer.current = empty_epoch()
        trainer.stepper.reset(trainer.current["sums"])
        losses = []
        with cpu_draws() if draws else nullcontext():
            for it, cpu_batches in enumerate(built.batches):
                batches = {k: tuple(t.to(device) if torch.is_tensor(t) else t for t in b)
                           for k, b in cpu_batches.items()}
                indices = [b[2] for b in batches.values()]
                for step in trainer.method.steps(trainer.view, batches, it):
                    trainer.stepper.step(step, indices, it)
                    losses.append({k: float(v.detach()) for k, v in step.items()})
        weights = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()
                   if v.is_floating_point()}
        trainer._kept.clear()
    return Steps(losses, first, weights)


def compare(got: Steps, ref: Steps, tol: Tolerance) -> dict:
    """Errors of ``got`` against ``ref`` relative to the step's scale, and whether each is
    within ``tol`` (a missing gradient, a different number of steps or a NaN fails)."""
    grad_scale = max((float(g.abs().max()) for g in ref.grads.values() if g.numel()),
                     default=0.0)
    errs = {k: float((got.grads[k] - g).abs().max()) for k, g in ref.grads.items()
            if g.numel() and k in got.grads}
    grad_err = math.inf if set(got.grads) != set(ref.grads) else max(errs.values(), default=0.0)
    worst = max(errs, key=errs.get, default="")
    curve_scale = max((abs(s["loss"]) for s in ref.losses), default=0.0)
    if len(got.losses) != len(ref.losses) or not ref.losses:
        first_err = curve_err = math.inf
    else:
        first_err = abs(got.losses[0]["loss"] - ref.losses[0]["loss"])
        curve_err = max(abs(g["loss"] - r["loss"]) for g, r in zip(got.losses, ref.losses,
                                                                  strict=True))
    out = {"steps": len(ref.losses), "grad_scale": grad_scale, "loss_scale": curve_scale,
           "grad_rel": grad_err / max(grad_scale, 1e-30),
           # where the largest difference is, and that parameter's own largest |gradient|
           "worst_param": worst,
           "worst_param_grad": float(ref.grads[worst].abs().max()) if worst else math.nan,
           "first_loss_rel": first_err / max(curve_scale, 1e-30),
           "curve_rel": curve_err / max(curve_scale, 1e-30),
           "ref_first_loss": ref.losses[0]["loss"] if ref.losses else math.nan,
           "got_first_loss": got.losses[0]["loss"] if got.losses else math.nan,
           "ref_last_loss": ref.losses[-1]["loss"] if ref.losses else math.nan,
           "got_last_loss": got.losses[-1]["loss"] if got.losses else math.nan}
    # `not x <= bound` fails on NaN too
    out["grad_ok"] = grad_scale > 0 and (out["grad_rel"] <= tol.grad if tol.grad is not None
                                         else math.isfinite(out["grad_rel"]))
    out["first_loss_ok"] = out["first_loss_rel"] <= tol.first_loss
    out["curve_ok"] = out["curve_rel"] <= tol.curve
    out["ok"] = bool(out["grad_ok"] and out["first_loss_ok"] and out["curve_ok"])
    return out


def identical(a: Steps, b: Steps) -> bool:
    """Bitwise the same losses and final weights (deterministic mode)."""
    return a.losses == b.losses and a.weights.keys() == b.weights.keys() and all(
        torch.equal(a.weights[k], b.weights[k]) for k in a.weights)


def detectable(ref: Steps, tol: Tolerance) -> tuple[int, int]:
    """(parameters whose dropped gradient the gradient bound catches, parameters): those with
    a largest |gradient| above the bound at the step's scale."""
    scale = max(float(g.abs().max()) for g in ref.grads.values() if g.numel())
    caught = sum(float(g.abs().max()) > tol.grad * scale for g in ref.grads.values()
                 if g.numel())
    return caught, len(ref.grads)
