"""Loading a finished run: its config, model weights and data, for evaluation and inference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from dmlkit.base.progress import phase
from dmlkit.base.run_dir import open_run, require_finished
from dmlkit.config import Config
from dmlkit.data.build import DataBundle, build_data
from dmlkit.data.download import file_digest
from dmlkit.data.transforms import build_transform
from dmlkit.engine.seed import resolve_device
from dmlkit.errors import CheckpointError
from dmlkit.models.embedding_model import EmbeddingModel
from dmlkit.models.run_model import load_run_model
from dmlkit.serve.embed import Images, embed_images


@dataclass
class LoadedRun:
    """A run's resolved config and trained model (eval mode), with its eval transform."""

    path: Path
    cfg: Config
    model: EmbeddingModel
    in_channels: int
    _data: DataBundle | None = None
    weights: Path | None = None

    @property
    def data(self) -> DataBundle:
        if self._data is None:
            with phase(f"loading data ({self.cfg.data.name})"):
                self._data = build_data(self.cfg.data, self.cfg.train.seed,
                                        self.cfg.run.cache_path / "images")
        return self._data

    @property
    def transform_name(self) -> str:
        """The eval transform preset: ``data.eval_transform``, else ``data.transform``."""
        return self.cfg.data.eval_transform or self.cfg.data.transform

    @cached_property
    def transform(self) -> Callable:
        """The run's eval transform (`transform_name` at ``data.image_size``), as in training."""
        return build_transform(self.transform_name, False, self.cfg.data.image_size,
                               self.in_channels)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the weights file: identifies the model an index or export came from."""
        if self.weights is None:
            raise CheckpointError("this model was not loaded from a weights file")
        return file_digest(self.weights, "sha256")

    def embed(
        self,
        images: Images,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        num_workers: int = 0,
        progress: bool = True,
    ) -> torch.Tensor:
        """Embeddings (float32 N x d, CPU) of paths, PIL images, a uint8 batch or an
        ImageDataset, converted to the run's channels and eval transform (see `serve.embed`)."""
        return embed_images(self.model, images, self.in_channels, self.transform, batch_size,
                            device, num_workers, progress)

    def evaluate_test(self) -> dict[str, float]:
        device = resolve_device(self.cfg.train.device)
        from dmlkit.engine.evaluate import evaluate_model  # evaluation code: not for inference

        return evaluate_model(self.model.to(device), self.data.test, self.cfg, device,
                              "test evaluation")


def load_run(run_dir: Path, weights: str = "model.safetensors") -> LoadedRun:
    """The model of ``run_dir`` with its final (or ``best.safetensors``) weights."""
    run_dir = Path(run_dir)
    run = open_run(run_dir)
    if not (run_dir / weights).is_file():
        require_finished(run, "load")
    cfg, model, in_channels = load_run_model(run_dir, weights)
    loaded = LoadedRun(run_dir, cfg, model, in_channels, weights=run_dir / weights)
    _ = loaded.fingerprint  # hash the weights now, as loaded, not when first asked
    return loaded

