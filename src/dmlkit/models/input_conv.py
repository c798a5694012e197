"""`adapt_input_conv`: a 3-channel (RGB) stem convolution made to take another channel count."""

from __future__ import annotations

from torch import nn


def adapt_input_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> None:
    """Give ``conv`` ``in_channels`` input channels, in place, as timm does for ``in_chans``
    (``timm.models.adapt_input_conv``): one channel gets the kernel summed over R, G and B, so
    a gray image gives the response of its 3-channel copy; k channels repeat R, G, B, scaled by
    3 / k. Without pretrained weights the new kernel is freshly initialized instead."""
    if conv.in_channels == in_channels:
        return
    from timm.models import adapt_input_conv as timm_adapt

    weight = timm_adapt(in_channels, conv.weight.detach())
    conv.in_channels = in_channels
    conv.weight = nn.Parameter(weight)
    if not pretrained:
        conv.reset_parameters()
