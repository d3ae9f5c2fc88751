"""TensorFlow's "SAME" padding for strided convolutions, so TF-trained weights run exactly.

TF pads a strided convolution so that ``out = ceil(in / stride)``, putting the odd pixel of the
padding at the bottom and right: a 3x3 stride-2 conv on a 300-pixel side pads 0 before and 1 after
(PyTorch's ``padding=1`` pads 1 on both sides and so reads the image one pixel shifted). On odd
sides (75 -> 38) both agree. Stride-1 convs with odd kernels pad ``k // 2`` on both sides in both
frameworks, so only strided convs are replaced.

Written by hand: ``nn.Conv2d(padding="same")`` refuses strides above 1, and torchvision has no
such layer.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF's SAME padding of one side: ``(before, after)`` for an input of ``size`` pixels.

    Example: ``same_padding(300, 3, 2) == (0, 1)``; ``same_padding(75, 3, 2) == (1, 1)``.
    """
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class TFSameConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that pads its input as TF's ``padding="SAME"`` does (same parameters and
    names, so state dicts load unchanged; ``padding`` is set to 0 and computed per input size)."""

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = same_padding(int(x.shape[-2]), kh, sh, dh)
        left, right = same_padding(int(x.shape[-1]), kw, sw, dw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return self._conv_forward(x, self.weight, self.bias)


def use_tf_same_padding(module: nn.Module) -> nn.Module:
    """Replace every strided ``nn.Conv2d`` inside ``module`` by a :class:`TFSameConv2d` with the same
    tensors, in place; returns ``module``."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d and max(child.stride) > 1:
                same = TFSameConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                    padding=0, dilation=child.dilation, groups=child.groups,
                                    bias=child.bias is not None, padding_mode="zeros")
                same.weight = child.weight
                same.bias = child.bias
                setattr(parent, name, same)
    return module
