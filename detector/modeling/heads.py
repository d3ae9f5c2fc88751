"""SSDLite prediction heads: depthwise 3x3 + BN + ReLU6, then a 1x1 conv, per level."""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from detector.modeling.backbone import BN_EPS, BN_MOMENTUM


def _prediction_block(in_channels: int, out_channels: int) -> nn.Sequential:
    norm = partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
    return nn.Sequential(
        Conv2dNormActivation(in_channels, in_channels, 3, groups=in_channels, norm_layer=norm,
                             activation_layer=nn.ReLU6),
        nn.Conv2d(in_channels, out_channels, 1),
    )


class SSDLiteHead(nn.Module):
    """Class and box predictions over every level.

    Outputs are flattened level by level in (row, column, anchor) order, matching
    :class:`detector.modeling.anchors.DefaultBoxGenerator`.

    ``class_prior``: for sigmoid-scored training (focal, varifocal, quality focal), the foreground
    biases of the class convs start at ``-log((1 - p) / p)`` so every score starts near ``p``
    (RetinaNet's prior, 0.01) instead of 0.5, which would make the first steps' loss over tens of
    thousands of background anchors swamp everything else. ``None``: zero biases (softmax).
    """

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int,
                 class_prior: float | None = None) -> None:
        super().__init__()
        if len(in_channels) != len(num_anchors):
            raise ValueError("one anchor count per level is needed")
        self.num_classes = num_classes
        self.cls_heads = nn.ModuleList(_prediction_block(c, a * num_classes) for c, a in zip(in_channels, num_anchors))
        self.box_heads = nn.ModuleList(_prediction_block(c, a * 4) for c, a in zip(in_channels, num_anchors))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=0.03)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if class_prior is not None:
            if not 0.0 < class_prior < 1.0:
                raise ValueError(f"class_prior must be in (0, 1), got {class_prior}")
            with torch.no_grad():
                for head, anchors in zip(self.cls_heads, num_anchors):
                    head[-1].bias.view(anchors, num_classes)[:, 1:] = -math.log((1 - class_prior) / class_prior)

    @staticmethod
    def _flatten(x: Tensor, width: int) -> Tensor:
        # [B, A*width, H, W] -> [B, H*W*A, width]
        batch = x.shape[0]
        return x.permute(0, 2, 3, 1).reshape(batch, -1, width)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """One map per level -> ``cls_logits [B, A, num_classes]``, ``bbox_regression [B, A, 4]``."""
        cls = [self._flatten(head(f), self.num_classes) for head, f in zip(self.cls_heads, features)]
        box = [self._flatten(head(f), 4) for head, f in zip(self.box_heads, features)]
        return torch.cat(cls, dim=1), torch.cat(box, dim=1)
