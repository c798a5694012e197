"""Frozen-backbone feature cache (``model.freeze_backbone``, docs/frozen-features.md).

The backbone's features of a set of images are computed once, in eval mode with the eval
transform, and written to ``<run.cache_dir>/features/<key>.safetensors`` (default cache dir:
``<run.root>/cache``; atomically; read back through safetensors' memory map). ``key`` is the
sha256 of everything the features depend on: the image set (dataset name, labels, pixels or
the files' path, size, modification time and inode: ``training_set_key``), the backbone (name
and a digest of its weights and buffers), the eval transform, image size, input channels and
whether it runs batched on the device. Any change gives another key (the features are
recomputed); the same key, from any later run, fold, trial or method, reads the file and
touches no image.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from dmlkit.base import process_group
from dmlkit.base.atomic_write import atomic_write_bytes
from dmlkit.base.progress import bar
from dmlkit.config import Config
from dmlkit.data.build import DataBundle, EvalData
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.feature_dataset import FeatureDataset
from dmlkit.errors import ConfigError
from dmlkit.evaluation.extract import extract_embeddings
from dmlkit.methods.guided import training_set_key
from dmlkit.models.embedding_model import EmbeddingModel

FORMAT = 1  # bump when the file layout or the key's meaning changes


def weights_digest(module: nn.Module) -> str:
    """sha256 over a module's state (names, dtypes, shapes and values, in order)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_key(cfg: Config, dataset: ImageDataset, backbone_digest: str,
                in_channels: int) -> dict:
    """Everything the cached features of ``dataset`` depend on (its sha256 names the file)."""
    d = cfg.data
    return {"format": FORMAT, "images": training_set_key(dataset.catalog),
            "dataset": dataset.catalog.name, "n": len(dataset), "backbone": cfg.model.backbone,
            "weights": backbone_digest, "transform": d.eval_transform or d.transform,
            "image_size": d.image_size, "in_channels": in_channels,
            "device_transforms": d.device_transforms}


def cached_features(dataset: ImageDataset, backbone: nn.Module, key: dict, folder: Path,
                    device: torch.device, batch_size: int = 512, num_workers: int | str = 0,
                    describe: str = "features") -> torch.Tensor:
    """The (N, feature_dim) features of ``dataset`` under ``key``: read from ``folder`` if
    there, else computed (progress bar with ETA on stderr) and written atomically."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = Path(folder) / f"{digest}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["features"]
        except (SafetensorError, OSError, KeyError):
            pass  # unreadable (e.g. a disk error): computed and written again
    # a DataLoader draws its seed from the global RNG: a run that computes the cache must draw
    # what a run that reads it draws
    with bar(f"caching backbone features ({describe})", len(dataset)) as advance, \
            torch.random.fork_rng(devices=[]):
        features, _ = extract_embeddings(backbone, dataset, batch_size, device, num_workers,
                                         advance=advance)
    atomic_write_bytes(path, save({"features": features.contiguous()},
                                  metadata={"key": json.dumps(key, sort_keys=True)}))
    return features


def use_feature_cache(cfg: Config, data: DataBundle, model: EmbeddingModel,
                      device: torch.device) -> DataBundle:
    """``data`` with the training stream and the evaluation sets replaced by the backbone's
    cached features, and ``model`` frozen to take them (`EmbeddingModel.freeze_backbone`).
    ``train_eval`` stays images (eval transform): the input of a teacher (Guided DML's master
    or teacher run), which is no backbone of ``model``. Under torch.distributed rank 0 computes
    what is missing, then every rank reads the files."""
    if cfg.data.stream_transforms:
        raise ConfigError("model.freeze_backbone: cached features have no per-stream "
                          "transforms (augmentation is off); unset data.stream_transforms")
    folder = cfg.run.cache_path / "features"
    backbone = model.backbone.to(device)
    digest = weights_digest(backbone)
    cache: dict[int, FeatureDataset] = {}

    def features(dataset: ImageDataset, describe: str) -> FeatureDataset:
        if id(dataset) not in cache:
            key = feature_key(cfg, dataset, digest, data.in_channels)
            rows = cached_features(dataset, backbone, key, folder, device, cfg.eval.batch_size,
                                   cfg.data.num_workers, describe)
            cache[id(dataset)] = FeatureDataset(dataset.catalog, rows)
        return cache[id(dataset)]

    def eval_data(e: EvalData | None, split: str) -> EvalData | None:
        if e is None:
            return None
        ref = None if e.reference is None else features(e.reference, f"{split} reference")
        return EvalData(features(e.query, f"{split} query" if ref else split), ref)

    if not process_group.info().is_main:
        process_group.barrier()  # rank 0 writes the cache first
    train = features(data.train_eval, "train")
    out = replace(data, train=train, train_streams={},
                  val=eval_data(data.val, "val"), test=eval_data(data.test, "test"))
    if process_group.info().is_main:
        process_group.barrier()
    model.freeze_backbone(cached=True)
    return out
