"""`EmbeddingModel`: a backbone shared by one or more named embedding heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmlkit.config import ModelConfig
from dmlkit.models.backbones import build_backbone, freeze_batchnorm
from dmlkit.models.heads import EmbeddingHead
from dmlkit.models.init import apply_init


class EmbeddingModel(nn.Module):
    """``images -> embedding`` used for retrieval; ``embed_heads`` gives every head's output.

    ``retrieval`` names the head used by ``forward`` (or a list of heads, whose L2-normalized
    outputs are concatenated).

    `freeze_backbone` fixes the backbone (no gradients, eval mode even in training); with
    ``cached=True`` the inputs are then the backbone's features themselves (a feature cache,
    docs/frozen-features.md): the backbone is skipped but kept, so the saved weights still
    embed images.
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: dict[str, EmbeddingHead],
        retrieval: str | list[str] = "embedding",
        freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.retrieval = retrieval
        self.freeze_bn = freeze_bn
        self.backbone_frozen = False
        self.cached_features = False

    def freeze_backbone(self, cached: bool = True) -> EmbeddingModel:
        """Fix the backbone; ``cached``: inputs are its features (it is no longer applied)."""
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.backbone_frozen, self.cached_features = True, cached
        return self

    def train(self, mode: bool = True) -> EmbeddingModel:
        super().train(mode)
        if mode and self.backbone_frozen:
            self.backbone.eval()
        elif mode and self.freeze_bn:
            freeze_batchnorm(self.backbone)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's features of images ``x`` (``x`` itself on cached features)."""
        return x if self.cached_features else self.backbone(x)

    def embed_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(x)
        return {name: head(features) for name, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.retrieval, str):
            return self.heads[self.retrieval](self.features(x))
        out = self.embed_heads(x)
        return torch.cat([F.normalize(out[n], dim=-1) for n in self.retrieval], dim=-1)


def build_model(
    cfg: ModelConfig, in_channels: int, extra_heads: dict[str, int] | None = None,
    retrieval: str | list[str] = "embedding",
) -> EmbeddingModel:
    """Backbone + the ``embedding`` head from ``cfg`` (+ ``extra_heads``: name -> dim)."""
    backbone = apply_init(build_backbone(cfg.backbone, in_channels, cfg.pretrained, cfg.weights),
                          cfg.init, cfg.pretrained)
    heads = {"embedding": EmbeddingHead(backbone.feature_dim, cfg.head.dim, cfg.head.output,
                                        cfg.head.hidden)}
    for name, dim in (extra_heads or {}).items():
        heads[name] = EmbeddingHead(backbone.feature_dim, dim, "l2")
    return EmbeddingModel(backbone, heads, retrieval, cfg.freeze_bn)
