"""SSD default boxes, as the TensorFlow Object Detection API's ``ssd_anchor_generator`` makes them."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class DefaultBoxGenerator:
    """Default boxes for ``num_levels`` feature maps.

    Scales grow linearly from ``min_scale`` to ``max_scale`` over the levels (fractions of the
    image side). Each location of level ``k`` gets one box per aspect ratio at scale ``s_k`` plus
    one box at ratio 1 and scale ``sqrt(s_k * s_{k+1})`` (``s_{K}`` = 1.0 after the last level).
    With ``reduce_boxes_in_lowest_layer`` the first level gets only three boxes,
    ``(0.1, 1), (s_0, 2), (s_0, 1/2)``, as in TF's ``ssdlite_mobilenet_v2_coco``.

    Box centres sit at ``((j + 0.5) / W, (i + 0.5) / H)`` of a ``H x W`` map; a box of scale ``s``
    and ratio ``r`` is ``s * sqrt(r)`` wide and ``s / sqrt(r)`` tall, relative to the image. Boxes
    are not clipped to the image (TF does not clip either).

    Example: one 1x1 level, ``min_scale = max_scale = 0.2``, ratios ``(1, 2)``,
    ``reduce_boxes_in_lowest_layer=False``, a 100x100 image:
    centre (50, 50); boxes 20x20, 28.28x14.14 and the extra sqrt(0.2 * 1.0) * 100 = 44.72 square.
    """

    def __init__(
        self,
        num_levels: int = 6,
        min_scale: float = 0.2,
        max_scale: float = 0.95,
        aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
        interpolated_scale: bool = True,
        reduce_boxes_in_lowest_layer: bool = True,
    ) -> None:
        if num_levels < 1:
            raise ValueError("num_levels must be at least 1")
        self.num_levels = num_levels
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.interpolated_scale = interpolated_scale
        self.reduce_boxes_in_lowest_layer = reduce_boxes_in_lowest_layer
        if num_levels == 1:
            scales = [self.min_scale]
        else:
            step = (self.max_scale - self.min_scale) / (num_levels - 1)
            scales = [self.min_scale + step * k for k in range(num_levels)]
        self.scales = scales + [1.0]
        self.box_specs = [self._level_specs(k) for k in range(num_levels)]

    def _level_specs(self, level: int) -> list[tuple[float, float]]:
        """(scale, aspect ratio) pairs of one level, in the order the heads predict them."""
        scale = self.scales[level]
        if level == 0 and self.reduce_boxes_in_lowest_layer:
            return [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        specs = [(scale, ratio) for ratio in self.aspect_ratios]
        if self.interpolated_scale:
            specs.append((math.sqrt(scale * self.scales[level + 1]), 1.0))
        return specs

    def num_anchors_per_location(self) -> list[int]:
        return [len(specs) for specs in self.box_specs]

    def __call__(self, feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]) -> Tensor:
        """Default boxes for maps of ``feature_sizes`` (``(H, W)`` each) on an ``(H, W)`` image.

        Returns:
            Tensor[A, 4]: xyxy boxes in image pixels, ordered level, row, column, box spec, which is
            the order of the heads' flattened outputs.
        """
        if len(feature_sizes) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature maps, got {len(feature_sizes)}")
        image_h, image_w = image_size
        all_boxes = []
        for (fh, fw), specs in zip(feature_sizes, self.box_specs):
            cy = (torch.arange(fh, dtype=torch.float64) + 0.5) / fh
            cx = (torch.arange(fw, dtype=torch.float64) + 0.5) / fw
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")
            wh = torch.tensor(
                [(s * math.sqrt(r), s / math.sqrt(r)) for s, r in specs], dtype=torch.float64
            )
            centres = torch.stack((cx, cy), dim=-1).reshape(-1, 1, 2)  # [HW, 1, 2]
            half = 0.5 * wh.reshape(1, -1, 2)  # [1, boxes, 2]
            boxes = torch.cat((centres - half, centres + half), dim=-1).reshape(-1, 4)
            all_boxes.append(boxes)
        boxes = torch.cat(all_boxes)
        scale = torch.tensor([image_w, image_h, image_w, image_h], dtype=torch.float64)
        return (boxes * scale).to(torch.float32)
