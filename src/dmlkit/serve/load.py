"""Loading a finished run: its config, model weights and data, for evaluation and inference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dmlkit import config as config_mod
from dmlkit.config import Config
from dmlkit.data.build import DataBundle, build_data
from dmlkit.engine.checkpoint import load_weights
from dmlkit.engine.seed import resolve_device
from dmlkit.engine.train import method_heads
from dmlkit.engine.trainer import evaluate_model
from dmlkit.errors import CheckpointError
from dmlkit.models.embedding_model import EmbeddingModel, build_model


@dataclass
class LoadedRun:
    """A run's resolved config and trained model (eval mode)."""

    path: Path
    cfg: Config
    model: EmbeddingModel
    in_channels: int
    _data: DataBundle | None = None

    @property
    def data(self) -> DataBundle:
        if self._data is None:
            self._data = build_data(self.cfg.data, self.cfg.train.seed)
        return self._data

    def evaluate_test(self) -> dict[str, float]:
        device = resolve_device(self.cfg.train.device)
        return evaluate_model(self.model.to(device), self.data.test, self.cfg, device)


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
    return LoadedRun(run_dir, cfg, model, in_channels)

