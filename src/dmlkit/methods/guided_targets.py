"""Guided DML's reduced hypothesis space: fixed target embeddings for the student, cached on disk.

The targets are t_i = master(x_i, y_i) for every training image x_i, embedded through its own
class's branch (eval mode, no gradients), or t_i = teacher(x_i) for any trained embedding model
(no labels). They are computed once per teacher and stored with sample indices in
``<run_dir>/targets/<key>.safetensors``; the file's metadata fingerprints the teacher (sha256 of
its config and of its state_dict), so a changed teacher invalidates the cache and a matching one
is reused without recomputing.

Images are either a uint8 N x H x W x C array (a Catalog's ``images``) or a torch Dataset whose
items are C x H x W tensors (or tuples starting with one). Batches are cast to float without
rescaling (raw 0-255 pixels, as the official code trains the master) and then passed through
``transform`` if given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn
from torch.utils.data import Dataset

from dmlkit.base.atomic_write import atomic_write_bytes
from dmlkit.errors import ConfigError, DataError
from dmlkit.evaluation.extract import dataset_batches

FORMAT = "dmlkit-targets-v1"
Images = np.ndarray | Tensor | Dataset
BatchTransform = Callable[[Tensor], Tensor]
log = logging.getLogger(__name__)


def _tensor_bytes(t: Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _checksum(*tensors: Tensor) -> str:
    return hashlib.sha256(b"".join(_tensor_bytes(t) for t in tensors)).hexdigest()


def config_hash(config: Mapping) -> str:
    """sha256 of the config as canonical JSON (sorted keys; non-JSON values via ``str``).

    >>> config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1})
    True
    """
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def weights_hash(model: nn.Module) -> str:
    """sha256 over the model's state_dict in sorted key order (name, dtype, shape, raw bytes)."""
    digest = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(_tensor_bytes(t))
    return digest.hexdigest()


def _image_batches(
    images: Images, batch_size: int, transform: BatchTransform | None,
    device: torch.device | str,
) -> Iterator[Tensor]:
    """Float N x C x H x W batches, in order (a batched dataset's built on ``device``)."""
    if isinstance(images, Dataset):
        for batch in dataset_batches(images, batch_size, device):
            x = batch[0] if isinstance(batch, list | tuple) else batch
            yield x.float() if transform is None else transform(x.float())
        return
    array = torch.as_tensor(images)
    if array.ndim != 4 or array.dtype != torch.uint8:
        raise DataError(
            f"in-memory images must be uint8 N x H x W x C, got {array.dtype} {tuple(array.shape)}"
        )
    for chunk in array.split(batch_size):
        x = chunk.permute(0, 3, 1, 2).float()
        yield x if transform is None else transform(x)


@torch.no_grad()
def _embed_all(
    model: nn.Module,
    images: Images,
    labels: Tensor | None,
    transform: BatchTransform | None,
    batch_size: int,
    device: torch.device | str | None,
) -> Tensor:
    """Eval-mode embeddings of all images (float32, CPU); the model's mode is restored after.
    Labels stay on the host (the master routes there); the outputs are copied once."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    outputs, start = [], 0
    try:
        for x in _image_batches(images, batch_size, transform, device):
            x = x.to(device, non_blocking=True)
            out = model(x) if labels is None else model(x, labels[start : start + len(x)])[0]
            start += len(x)
            if not isinstance(out, Tensor) or out.ndim != 2 or len(out) != len(x):
                raise ConfigError("the teacher must return one embedding row (N x D) per image")
            outputs.append(out)
    finally:
        model.train(was_training)
    if not outputs:
        raise DataError("no images to embed")
    return torch.cat(outputs).float().cpu()


def compute_master_targets(
    master: nn.Module,
    images: Images,
    labels: np.ndarray | Tensor,
    *,
    transform: BatchTransform | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Tensor:
    """t_i = master(x_i, y_i)[0]: each image through its own class's branch. Float32 N x D (CPU).
    The labels reach ``master`` as a CPU tensor (`MultiBranchMaster` routes on the host)."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    if len(labels) != len(images):
        raise DataError(f"{len(images)} images but {len(labels)} labels")
    return _embed_all(master, images, labels, transform, batch_size, device)


def targets_from_model(
    model: nn.Module,
    images: Images,
    *,
    transform: BatchTransform | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Tensor:
    """t_i = model(x_i): any trained embedding model as the teacher (no labels). N x D (CPU)."""
    return _embed_all(model, images, None, transform, batch_size, device)


@dataclass(frozen=True)
class TargetCache:
    """``<run_dir>/targets/<key>.safetensors``: tensors ``targets`` (N x D) and ``indices`` (N),
    metadata ``format``, ``config_hash``, ``weights_hash``, ``data_sha256`` (of both tensors),
    ``n`` and ``dim``."""

    run_dir: Path
    key: str = "master"

    def __post_init__(self) -> None:
        if not self.key or Path(self.key).name != self.key or self.key.startswith("."):
            raise ConfigError(f"target cache key must be a plain file name, got {self.key!r}")

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / "targets" / f"{self.key}.safetensors"

    def load(self, fingerprint: Mapping[str, str], indices: Tensor | None = None) -> Tensor | None:
        """The cached targets if the file is intact and matches ``fingerprint`` (and ``indices``
        when given); None when missing, stale or corrupt (corrupt: with a warning)."""
        if not self.path.exists():
            return None
        try:
            with safe_open(self.path, framework="pt") as f:
                meta = f.metadata() or {}
                targets, cached_indices = f.get_tensor("targets"), f.get_tensor("indices")
        except (SafetensorError, KeyError, OSError, ValueError) as err:
            warnings.warn(f"{self.path} is unreadable ({err}); recomputing", stacklevel=3)
            return None
        intact = (
            meta.get("data_sha256") == _checksum(targets, cached_indices)
            and meta.get("n") == str(len(targets)) == str(len(cached_indices))
            and meta.get("dim") == str(targets.shape[-1])
        )
        if not intact:
            warnings.warn(f"{self.path} is corrupt (checksum or shape); recomputing", stacklevel=3)
            return None
        expected = {"format": FORMAT, **fingerprint}
        if any(meta.get(k) != v for k, v in expected.items()):
            log.info("%s was made by another teacher; recomputing", self.path)
            return None
        if indices is not None and not torch.equal(indices, cached_indices):
            log.info("%s holds other samples; recomputing", self.path)
            return None
        return targets

    def save(self, targets: Tensor, indices: Tensor, fingerprint: Mapping[str, str]) -> None:
        """Write atomically (temporary file in the same folder, fsync, rename)."""
        targets = targets.detach().float().cpu().contiguous()
        indices = indices.detach().cpu().contiguous()
        meta = {
            "format": FORMAT,
            **fingerprint,
            "data_sha256": _checksum(targets, indices),
            "n": str(len(targets)),
            "dim": str(targets.shape[1]),
        }
        data = safetensors_bytes({"targets": targets, "indices": indices}, meta)
        atomic_write_bytes(self.path, data)


def load_or_compute(
    run_dir: str | Path,
    teacher: nn.Module,
    teacher_config: Mapping,
    compute_fn: Callable[[], Tensor],
    *,
    indices: np.ndarray | Tensor | None = None,
    key: str = "master",
) -> Tensor:
    """Cached targets for ``teacher`` (master or any model), computing them with ``compute_fn``
    only when the cache is missing, corrupt, or made by a different config, weights or sample set.

    ``indices`` names the samples the rows belong to (default 0..N-1); rows follow its order.
    """
    cache = TargetCache(Path(run_dir), key)
    fingerprint = {
        "config_hash": config_hash(teacher_config),
        "weights_hash": weights_hash(teacher),
    }
    wanted = None if indices is None else torch.as_tensor(np.asarray(indices), dtype=torch.int64)
    cached = cache.load(fingerprint, wanted)
    if cached is not None:
        return cached
    targets = compute_fn()
    if not isinstance(targets, Tensor) or targets.ndim != 2:
        raise ConfigError("compute_fn must return an N x D tensor of targets")
    if wanted is None:
        wanted = torch.arange(len(targets), dtype=torch.int64)
    if len(wanted) != len(targets):
        raise DataError(f"{len(targets)} targets computed for {len(wanted)} sample indices")
    cache.save(targets, wanted, fingerprint)
    return targets.detach().float().cpu()
