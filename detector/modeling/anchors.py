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

    torchvision's ``DefaultBoxGenerator`` makes the same boxes in another order and clips their
    sizes: ``order="torchvision"`` puts the interpolated box second, ``(s, 1), (s', 1), (s, 2),
    (s, 1/2), ...``, and ``clip=True`` caps each width and height at the image side.
    mmdetection's ``SSDAnchorGenerator`` uses that order too, with sizes given per level
    (``scales``: ``num_levels + 1`` fractions of the image side, e.g. its ``min_sizes`` and the last
    ``max_size`` over the input size) and centres on a pixel grid (``steps``: the centre of cell
    ``j`` is ``(j + 0.5) * step`` pixels, so a 3x3 map with step 107 has centres 53.5, 160.5, 267.5).

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
        order: str = "tf",
        clip: bool = False,
        scales: Sequence[float] | None = None,
        steps: Sequence[float] | None = None,
    ) -> None:
        if order not in ("tf", "torchvision"):
            raise ValueError(f"order must be 'tf' or 'torchvision', got {order!r}")
        if num_levels < 1:
            raise ValueError("num_levels must be at least 1")
        self.num_levels = num_levels
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.interpolated_scale = interpolated_scale
        self.reduce_boxes_in_lowest_layer = reduce_boxes_in_lowest_layer
        self.order = order
        self.clip = clip
        if steps is not None and len(steps) != num_levels:
            raise ValueError(f"steps: one per level ({num_levels}), got {len(steps)}")
        self.steps = None if steps is None else tuple(float(s) for s in steps)
        if scales is not None:
            if len(scales) != num_levels + 1:
                raise ValueError(f"scales: one per level plus the last level's upper scale ({num_levels + 1}), "
                                 f"got {len(scales)}")
            self.scales = [float(s) for s in scales]
        elif num_levels == 1:
            self.scales = [self.min_scale, 1.0]
        else:
            step = (self.max_scale - self.min_scale) / (num_levels - 1)
            self.scales = [self.min_scale + step * k for k in range(num_levels)] + [1.0]
        self.box_specs = [self._level_specs(k) for k in range(num_levels)]

    def _level_specs(self, level: int) -> list[tuple[float, float]]:
        """(scale, aspect ratio) pairs of one level, in the order the heads predict them."""
        scale = self.scales[level]
        if level == 0 and self.reduce_boxes_in_lowest_layer:
            return [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        specs = [(scale, ratio) for ratio in self.aspect_ratios]
        if self.interpolated_scale:
            interpolated = (math.sqrt(scale * self.scales[level + 1]), 1.0)
            specs.insert(1 if self.order == "torchvision" else len(specs), interpolated)
        return specs

    def num_anchors_per_location(self) -> list[int]:
        return [len(specs) for specs in self.box_specs]

    def levels(self, feature_sizes: Sequence[tuple[int, int]]) -> Tensor:
        """Int64Tensor[A]: the level of each default box, in the order of :meth:`__call__`."""
        counts = [h * w * len(specs) for (h, w), specs in zip(feature_sizes, self.box_specs)]
        return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))

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
        for level, ((fh, fw), specs) in enumerate(zip(feature_sizes, self.box_specs)):
            if self.steps is None:  # cells of 1/fh x 1/fw of the image
                cy = (torch.arange(fh, dtype=torch.float64) + 0.5) / fh
                cx = (torch.arange(fw, dtype=torch.float64) + 0.5) / fw
            else:  # cells of ``step`` pixels, mmdetection's grid
                cy = (torch.arange(fh, dtype=torch.float64) + 0.5) * self.steps[level] / image_h
                cx = (torch.arange(fw, dtype=torch.float64) + 0.5) * self.steps[level] / image_w
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")
            wh = torch.tensor(
                [(s * math.sqrt(r), s / math.sqrt(r)) for s, r in specs], dtype=torch.float64
            )
            if self.clip:
                wh = wh.clamp(max=1.0)
            centres = torch.stack((cx, cy), dim=-1).reshape(-1, 1, 2)  # [HW, 1, 2]
            half = 0.5 * wh.reshape(1, -1, 2)  # [1, boxes, 2]
            boxes = torch.cat((centres - half, centres + half), dim=-1).reshape(-1, 4)
            all_boxes.append(boxes)
        boxes = torch.cat(all_boxes)
        scale = torch.tensor([image_w, image_h, image_w, image_h], dtype=torch.float64)
        return (boxes * scale).to(torch.float32)
