"""Seeding, determinism and device selection; the RNG states a checkpoint holds."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from dmlkit.errors import ConfigError

CUBLAS_WORKSPACE = ":4096:8"  # cuBLAS's documented setting for deterministic results



def seed_everything(seed: int, deterministic: bool | None = True,
                    device: torch.device | str | None = None) -> None:
    """Seed Python, NumPy and torch, and choose the kernels (docs/distributed.md).

    ``deterministic`` None (``train.deterministic`` unset): True on the CPU, False on CUDA.
    True: deterministic kernels wherever torch has one, a warning naming an op that has none
    (it runs nondeterministically; dmlkit's backbones have none: their global average pooling
    is a mean, `dmlkit.models.backbones.GlobalAvgPool`). On CUDA also cuDNN's deterministic
    convolutions, cudnn.benchmark off and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when unset
    (cuBLAS needs it), at a speed cost (docs/gpu.md). False on CUDA: cudnn.benchmark on (the
    fastest convolution kernels, not bitwise reproducible).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    cuda = _is_cuda(device)
    if deterministic is None:
        deterministic = not cuda
    if deterministic and cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = cuda and deterministic
    torch.backends.cudnn.benchmark = cuda and not deterministic


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ConfigError for a device this machine lacks
    (``cuda`` without a GPU, ``cuda:3`` with fewer GPUs) or a name torch does not know."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: CUDA is not available on this machine; use "
                              "cpu or auto")
        if (device.index or 0) >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} GPU(s) (cuda:0 to "
                              f"cuda:{count - 1})")
    return device


def _is_cuda(device: torch.device | str | None) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def cuda_rng_state(device: torch.device | str | None) -> torch.Tensor | None:
    """The CUDA generator state of ``device`` (None for a CPU device)."""
    return torch.cuda.get_rng_state(device) if _is_cuda(device) else None


def rng_state(cuda_ranks: list | None = None, device: torch.device | str | None = None) -> dict:
    """The global RNG states: torch CPU, NumPy, Python ``random`` and, per rank, the CUDA
    generator of the rank's own training device (``cuda_ranks[r]``; default: ``device``'s)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    if cuda_ranks is None:
        cuda_ranks = [cuda_rng_state(device)]
    return {
        "torch": torch.get_rng_state(),
        "cuda_ranks": [s for s in cuda_ranks if s is not None],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "python": random.getstate(),
    }


def set_rng_state(state: dict, rank: int = 0, device: torch.device | str | None = None) -> None:
    """Restore what `rng_state` returned; CUDA ``device`` gets ``cuda_ranks[rank]``, or rank
    0's where the state has no entry for ``rank`` (resumed on more ranks: every rank then
    draws what rank 0 draws, as the ranks of the saved run did). Checkpoints before per-rank
    states hold ``cuda``, every device's state of rank 0: restored only in a single process
    with as many devices."""
    torch.set_rng_state(state["torch"])
    ranks = state.get("cuda_ranks")
    if _is_cuda(device) and ranks:
        torch.cuda.set_rng_state(ranks[rank] if rank < len(ranks) else ranks[0], device)
    old = state.get("cuda") or []
    if (ranks is None and old and rank == 0 and torch.cuda.is_available()
            and len(old) == torch.cuda.device_count()):
        torch.cuda.set_rng_state_all(old)
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                             n["has_gauss"], n["gauss"]))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
