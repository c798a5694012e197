"""Strict device mode: no tensor made off the model's device meets the model's tensors.

On a CUDA run a tensor made by a factory without ``device=`` (``torch.tensor(x)``, ``zeros``...)
is a CPU tensor; stacking or combining it with CUDA tensors raises (Sharing's
``shared_triplets`` once did, at the first log step). On the CPU nothing fails, so this mode
tags every tensor a factory makes without a device in dmlkit's device-side code (methods,
losses, miners, models, engine), follows the tag through every torch operation on tagged
tensors alone, clears it on a move (``.to(device)``), and records any operation that mixes a
tagged tensor with an untagged one: what CUDA would refuse (or silently copy), found on the CPU.
"""

import sys

import pytest
import torch
from rich.console import Console
from rich.progress import Progress
from torch.overrides import TorchFunctionMode

from dmlkit import config
from dmlkit.base.run_dir import RunDir
from dmlkit.engine.train import build_components
from dmlkit.engine.trainer import Trainer

DEVICE_SIDE = ("/dmlkit/methods/", "/dmlkit/losses/", "/dmlkit/miners/", "/dmlkit/models/",
               "/dmlkit/engine/")
FACTORIES = {torch.tensor, torch.as_tensor, torch.scalar_tensor, torch.zeros, torch.ones,
             torch.empty, torch.full, torch.arange, torch.linspace, torch.eye, torch.rand,
             torch.randn, torch.randint, torch.randperm}
MOVES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_}


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None and ("/torch/" in frame.f_code.co_filename
                                 or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    return "" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _tensors(value) -> list[torch.Tensor]:
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _moves_device(args, kwargs) -> bool:
    """Whether a ``Tensor.to`` call names a device (not only a dtype)."""
    named = [*args[1:], kwargs.get("device")]
    return any(isinstance(a, (str, torch.device)) or torch.is_tensor(a) for a in named)


class StrictDevice(TorchFunctionMode):
    """Records ``(function, caller)`` of each operation mixing off-device and device tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.mixed: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in FACTORIES:
            caller = _caller()
            if kwargs.get("device") is None and any(s in caller for s in DEVICE_SIDE):
                for t in _tensors(out):
                    t._off_device = caller
            return out
        inputs = _tensors((args, kwargs))
        tagged = [t for t in inputs if getattr(t, "_off_device", None)]
        if not tagged or (func in MOVES and _moves_device(args, kwargs)):
            return out
        if len(tagged) < len(inputs):
            self.mixed.append((getattr(func, "__name__", str(func)), tagged[0]._off_device))
        else:
            for t in _tensors(out):
                t._off_device = tagged[0]._off_device
        return out


@pytest.mark.parametrize("preset", ["digits-smoke", "margin-small", "sharing-small",
                                    "compose-smoke"])
def test_no_tensor_off_the_model_device(tmp_path, preset):
    cfg = config.load(preset, [
        f"run.root={tmp_path}", "data.name=digits", "data.image_size=28",
        "model.backbone=small_cnn", "train.batch_size=24", "train.m_per_class=8",
        "train.batches_per_epoch=4", "train.log_every=2",
    ])
    data, method, model = build_components(cfg)
    trainer = Trainer(cfg, data, model, method, RunDir.create(cfg), torch.device("cpu"),
                      Console(quiet=True))
    trainer.method.prepare(trainer.model, trainer.data, trainer.run.path, trainer.device)
    with StrictDevice() as mode:
        out = trainer.train_epoch(Progress(console=Console(quiet=True)))
        trainer.save_checkpoint()
    assert out["train_loss"] > 0
    assert not mode.mixed, sorted(set(mode.mixed))
