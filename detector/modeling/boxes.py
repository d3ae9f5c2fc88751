"""Box coding for SSD: center-size offsets with (10, 10, 5, 5) weights.

Box format conventions used throughout the package:
- ``xyxy``: ``(x1, y1, x2, y2)`` in pixels, the format of ``torchvision.ops``.
- Anchors are ``xyxy`` in the pixels of the network input (``image_size``).

:func:`scale_boxes_to_image` is the one mapping from network-input pixels back to an original
image's pixels (the post-processor, the ONNX runner and so the Predictor all go through it).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Same clamp as torchvision: keeps exp() finite for wild regressions.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes boxes as offsets from anchors and decodes them back.

    The coding is SSD's: ``(dx, dy, dw, dh) = (wx * (cx - cx_a) / w_a, wy * (cy - cy_a) / h_a,
    ww * log(w / w_a), wh * log(h / h_a))``. It equals
    ``torchvision.models.detection._utils.BoxCoder`` with the same weights, but broadcasts over
    leading batch dimensions (``[B, A, 4]`` against anchors ``[A, 4]``) without repeating the
    anchors per image, and exports to ONNX as plain arithmetic.
    """

    def __init__(self, weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)) -> None:
        self.weights = tuple(float(w) for w in weights)

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Encode ``boxes`` (``[..., 4]`` xyxy) relative to ``anchors`` (``[..., 4]`` xyxy).

        Returns:
            Tensor[..., 4]: the regression targets ``(dx, dy, dw, dh)``.
        """
        wx, wy, ww, wh = self.weights
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        acx = anchors[..., 0] + 0.5 * aw
        acy = anchors[..., 1] + 0.5 * ah
        bw = boxes[..., 2] - boxes[..., 0]
        bh = boxes[..., 3] - boxes[..., 1]
        bcx = boxes[..., 0] + 0.5 * bw
        bcy = boxes[..., 1] + 0.5 * bh
        return torch.stack(
            (
                wx * (bcx - acx) / aw,
                wy * (bcy - acy) / ah,
                ww * torch.log(bw / aw),
                wh * torch.log(bh / ah),
            ),
            dim=-1,
        )

    def decode(self, codes: Tensor, anchors: Tensor) -> Tensor:
        """Decode ``codes`` (``[..., 4]``) against ``anchors`` (broadcastable ``[..., 4]`` xyxy).

        Returns:
            Tensor[..., 4]: boxes in xyxy, in the anchors' pixel frame.
        """
        # (x, y) and (w, h) pairs as two-column slices: the same arithmetic as torchvision's decode,
        # in a third of the ops (inference post-processing is op-overhead bound on the CPU).
        offsets = codes / codes.new_tensor(self.weights)
        anchor_wh = anchors[..., 2:] - anchors[..., :2]
        anchor_ctr = anchors[..., :2] + 0.5 * anchor_wh
        ctr = offsets[..., :2] * anchor_wh + anchor_ctr
        half_wh = 0.5 * torch.exp(offsets[..., 2:].clamp(max=BBOX_XFORM_CLIP)) * anchor_wh
        return torch.cat((ctr - half_wh, ctr + half_wh), dim=-1)


def scale_boxes_to_image(
    boxes: Tensor, input_size: tuple[int, int], image_sizes: Tensor | Sequence[int] | Sequence[Sequence[int]]
) -> Tensor:
    """Network-input pixels -> original image pixels, clipped to the image.

    Args:
        boxes: ``[N, 4]`` xyxy in the pixels of the ``(H, W)`` network input.
        input_size: ``(H, W)`` of the network input.
        image_sizes: the original ``(h, w)``: one pair for every box, or ``[N, 2]`` (one per box).

    Returns:
        ``[N, 4]`` xyxy, ``x * w / W`` and ``y * h / H``, clamped to ``[0, w] x [0, h]`` (torchvision's
        ``resize_boxes`` followed by ``clip_boxes_to_image``).

    Example: input ``(64, 128)``, image ``(32, 256)``: ``[100, 60, 140, 70]`` -> ``[200, 30, 256, 32]``.
    """
    in_h, in_w = input_size
    hw = torch.as_tensor(image_sizes, dtype=boxes.dtype, device=boxes.device)
    wh = hw.flip(-1)
    limit = torch.cat((wh, wh), dim=-1)  # (w, h, w, h), shared or one row per box
    scale = limit / boxes.new_tensor([in_w, in_h, in_w, in_h])
    return torch.minimum((boxes * scale).clamp(min=0), limit)
