"""Mixed precision for training: the model's forward under autocast, losses in float32.

``train.precision``: ``fp32`` (default), ``bf16`` or ``fp16`` (with a gradient scaler, see the
trainer). Only the model's forward runs under ``torch.autocast``; its outputs are cast to float32
before any miner, loss or regularizer sees them, so distances, margins and MDR statistics are
float32. Evaluation embeds through the same view (`inference_view`): its forward runs under
the same autocast, its embeddings are float32.
"""

from __future__ import annotations

import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecisionView(nn.Module):
    """What a method calls during training: ``forward`` / ``embed_heads`` of ``model`` under
    autocast (and channels_last input when asked), float32 outputs. Holds no parameters of its
    own: checkpoints and the optimizer use ``model``."""

    def __init__(self, model: nn.Module, precision: str, device: torch.device,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.dtype = DTYPES.get(precision)
        self.device_type = device.type
        self.channels_last = channels_last

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) \
            if self.channels_last and x.ndim == 4 else x

    def _autocast(self):
        return torch.autocast(self.device_type, self.dtype, enabled=self.dtype is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            out = self.model(self._input(x))
        return out.float()

    def embed_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._autocast():
            out = self.model.embed_heads(self._input(x))
        return {k: v.float() for k, v in out.items()}


def training_view(model: nn.Module, precision: str, device: torch.device,
                  channels_last: bool = False) -> nn.Module:
    """``model`` itself in float32 without channels_last, else its `MixedPrecisionView`
    (``channels_last`` also converts the model's weights to that memory format)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if precision == "fp32" and not channels_last:
        return model
    return MixedPrecisionView(model, precision, device, channels_last)


def inference_view(model: nn.Module, precision: str, device: torch.device,
                   channels_last: bool = False) -> nn.Module:
    """`training_view` in ``model``'s current train/eval mode (what extraction saves and
    restores), for embedding with the training forward's precision and memory format."""
    return training_view(model, precision, device, channels_last).train(model.training)
