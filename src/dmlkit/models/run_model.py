"""A trained run's model, rebuilt from its run directory: the config's architecture (with the
heads its method adds) and its weights."""

from __future__ import annotations

from pathlib import Path

from dmlkit.base.files import load_weights
from dmlkit.base.run_dir import open_run
from dmlkit.config import Config
from dmlkit.errors import CheckpointError
from dmlkit.models.embedding_model import EmbeddingModel, build_model


def method_heads(cfg: Config) -> dict:
    """Extra heads and the retrieval head(s) a method needs from the model."""
    s = cfg.method.parts.sharing
    if s is not None:
        retrieval = "embedding" if s.retrieval == "class" else ["embedding", "shared"]
        return {"extra_heads": {"shared": s.shared_dim}, "retrieval": retrieval}
    return {}


def load_run_model(run_dir: Path, weights: str = "model.safetensors"
                   ) -> tuple[Config, EmbeddingModel, int]:
    """(config, model in eval mode, input channels) of ``run_dir`` with weights ``weights``."""
    run_dir = Path(run_dir)
    cfg = open_run(run_dir).read_config()
    state = load_weights(run_dir / weights)
    # the run's weights replace every parameter: no ImageNet weights to fetch
    arch = cfg.model.model_copy(update={"pretrained": False})
    model = build_model(arch, 3, **method_heads(cfg))
    # input channels: those of the first convolution in the model's own order (the file's
    # order is alphabetical: e.g. EfficientNet's blocks come before its stem there)
    stem = next((k for k, v in model.state_dict().items() if v.ndim == 4), None)
    in_channels = int(state[stem].shape[1]) if stem in state else 3
    if in_channels != 3:
        model = build_model(arch, in_channels, **method_heads(cfg))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{run_dir / weights} does not match the run's model config: {str(e)[:200]}"
        ) from None
    return cfg, model.eval(), in_channels
