"""Loading a finished run: its config, model weights and data, for evaluation and inference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from dmlkit import config as config_mod
from dmlkit.config import Config
from dmlkit.data.build import DataBundle, build_data
from dmlkit.data.download import file_digest
from dmlkit.data.transforms import build_transform
from dmlkit.engine.checkpoint import load_weights
from dmlkit.engine.seed import resolve_device
from dmlkit.engine.train import method_heads
from dmlkit.engine.trainer import evaluate_model
from dmlkit.errors import CheckpointError
from dmlkit.models.embedding_model import EmbeddingModel, build_model
from dmlkit.progress import phase
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
                self._data = build_data(self.cfg.data, self.cfg.train.seed)
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
        return evaluate_model(self.model.to(device), self.data.test, self.cfg, device,
                              "test evaluation")


def load_run(run_dir: Path, weights: str = "model.safetensors") -> LoadedRun:
    """The model of ``run_dir`` with its final (or ``best.safetensors``) weights."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = config_mod.load(str(cfg_path))
    state = load_weights(run_dir / weights)
    first = next((v for k, v in state.items() if v.ndim == 4), None)
    in_channels = int(first.shape[1]) if first is not None else 3
    model = build_model(cfg.model, in_channels, **method_heads(cfg))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{run_dir / weights} does not match the run's model config: {str(e)[:200]}"
        ) from None
    model.eval()
    loaded = LoadedRun(run_dir, cfg, model, in_channels, weights=run_dir / weights)
    _ = loaded.fingerprint  # hash the weights now, as loaded, not when first asked
    return loaded

