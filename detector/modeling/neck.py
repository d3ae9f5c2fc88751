"""Feature-pyramid adapters: SSDLite's extra layers, optionally with FPN-lite top-down fusion."""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from detector.modeling.backbone import BN_EPS, BN_MOMENTUM

EXTRA_CHANNELS = (512, 256, 256, 128)
FPN_CHANNELS = 128


def scaled_channels(channels: int, width_mult: float, min_depth: int = 16) -> int:
    """Channel count under a width multiplier, as TF's ``min_depth`` rule does it."""
    return max(min_depth, int(channels * width_mult))


def _conv(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Module:
    norm = partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
    return Conv2dNormActivation(
        in_ch, out_ch, kernel, stride, groups=groups, norm_layer=norm,
        activation_layer=nn.ReLU6 if act else None,
    )


def extra_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv to half the channels, 3x3 depthwise stride 2, 1x1 conv to ``out_channels``."""
    mid = out_channels // 2
    return nn.Sequential(
        _conv(in_channels, mid, 1),
        _conv(mid, mid, 3, stride=2, groups=mid),
        _conv(mid, out_channels, 1),
    )


class SSDLiteNeck(nn.Module):
    """Appends four extra blocks to the backbone's ``[C4, C5]``, giving six maps (seven after
    ``[C3, C4, C5]``).

    At 320x320 input the maps are 20, 10, 5, 3, 2, 1 pixels square (19, 10, 5, 3, 2, 1 at 300; C3
    adds 40).
    """

    def __init__(self, in_channels: Sequence[int], width_mult: float = 1.0) -> None:
        super().__init__()
        channels = [scaled_channels(c, width_mult) for c in EXTRA_CHANNELS]
        blocks = []
        previous = in_channels[-1]
        for out in channels:
            blocks.append(extra_block(previous, out))
            previous = out
        self.extra = nn.ModuleList(blocks)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """The backbone's maps, then the four extra blocks' (the last map each one's input), finest first."""
        maps = list(features)
        x = maps[-1]
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return maps


class FPNLiteNeck(nn.Module):
    """SSDLite's maps (six, or seven with C3) fused top-down, FPN-lite style.

    Each level gets a 1x1 lateral conv to ``fpn_channels``; from the coarsest level down, the
    upsampled (nearest) coarser output is added to the lateral, then smoothed by a
    depthwise-separable 3x3 conv. Every output has ``fpn_channels`` channels.
    """

    def __init__(self, in_channels: Sequence[int], width_mult: float = 1.0, fpn_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.ssdlite = SSDLiteNeck(in_channels, width_mult)
        out = scaled_channels(fpn_channels, width_mult)
        level_channels = list(in_channels) + [scaled_channels(c, width_mult) for c in EXTRA_CHANNELS]
        self.lateral = nn.ModuleList(_conv(c, out, 1, act=False) for c in level_channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(_conv(out, out, 3, groups=out), _conv(out, out, 1)) for _ in level_channels
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        maps = self.ssdlite(features)
        laterals = [lateral(m) for lateral, m in zip(self.lateral, maps)]
        outputs = [self.smooth[-1](laterals[-1])]
        for level in range(len(laterals) - 2, -1, -1):
            top = F.interpolate(outputs[0], size=laterals[level].shape[-2:], mode="nearest")
            outputs.insert(0, self.smooth[level](laterals[level] + top))
        return outputs


def build_neck(name: str, in_channels: Sequence[int], width_mult: float) -> nn.Module:
    if name == "ssdlite":
        return SSDLiteNeck(in_channels, width_mult)
    if name == "fpn":
        return FPNLiteNeck(in_channels, width_mult)
    raise ValueError(f"neck must be 'ssdlite' or 'fpn', got {name!r}")
