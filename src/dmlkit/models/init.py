"""`apply_init`: the weight initialization a backbone starts from (``model.init``).

- ``torchvision``: whatever the backbone's constructor does (torchvision's ResNets:
  kaiming-normal fan-out convolutions, std sqrt(2 / (C_out k^2)); BatchNorm weight 1, bias 0).
- ``pytorch_default``: every layer's own ``reset_parameters``, i.e. PyTorch's default layer
  init, as a ResNet written from ``nn.Conv2d``/``nn.Linear`` gets it (Guided DML's official
  student, official ``MyModel_CIFAR10.py`` ``ResNet``): conv and linear weights
  kaiming_uniform(a = sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in).
"""

from __future__ import annotations

from torch import nn

from dmlkit.errors import ConfigError

INITS = ("torchvision", "pytorch_default")


def apply_init(module: nn.Module, init: str, pretrained: bool = False) -> nn.Module:
    """Re-initialize ``module`` in place by ``init`` (one of `INITS`); returns it.

    >>> conv = nn.Conv2d(64, 64, 3)
    >>> _ = nn.init.zeros_(conv.weight)
    >>> bool(apply_init(conv, "pytorch_default").weight.abs().max() <= 1 / 576 ** 0.5)
    True
    """
    if init not in INITS:
        raise ConfigError(f"unknown model.init {init!r}; use {' or '.join(INITS)}")
    if init == "pytorch_default":
        if pretrained:
            raise ConfigError("model.init=pytorch_default would overwrite the pretrained weights")
        for m in module.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    return module
