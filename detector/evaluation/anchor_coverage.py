"""How well a model's default boxes cover a dataset's boxes: the check behind an anchor choice.

An object the matcher can only force onto its single best anchor trains one positive per image;
one overlapped by many anchors trains many. ``docs/benchmarks.md`` ("Quality at a fixed budget")
shows the quickstart's mAP following this count.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou


@dataclass(frozen=True)
class CoverageBin:
    """Boxes whose relative size ``sqrt(w * h) / image side`` lies in ``[low, high)``."""

    low: float
    high: float
    boxes: int
    uncovered: float  # share of the boxes with no anchor at IoU >= the threshold
    mean_positives: float  # anchors at IoU >= the threshold, per box
    median_best_iou: float


def anchor_coverage(boxes: Tensor, anchors: Tensor, iou_threshold: float) -> tuple[Tensor, Tensor]:
    """Best anchor IoU and the number of anchors at IoU >= ``iou_threshold``, per box.

    Args:
        boxes: Tensor[N, 4], xyxy in the network's input pixels.
        anchors: Tensor[A, 4], xyxy in the same frame (``SSDLite.anchors``).

    Returns:
        (Tensor[N] float best IoU, Tensor[N] int64 positive count). The matcher's forced match
        adds one positive to a box with none, which these counts leave out.

    Example: anchors ``[0, 0, 10, 10]`` and ``[0, 0, 20, 20]``, box ``[0, 0, 14, 14]``:
    IoUs 100/196 = 0.51 and 196/400 = 0.49, so best 0.51 and one positive at 0.5.
    """
    if boxes.numel() == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    # Chunked: COCO has ~900k boxes against a few thousand anchors.
    best, positives = [], []
    for chunk in boxes.split(4096):
        iou = box_iou(chunk, anchors)
        best.append(iou.max(dim=1).values)
        positives.append((iou >= iou_threshold).sum(dim=1))
    return torch.cat(best), torch.cat(positives)


def coverage_by_size(
    boxes: Tensor, image_side: float, best_iou: Tensor, positives: Tensor, edges: Sequence[float]
) -> list[CoverageBin]:
    """Group :func:`anchor_coverage`'s results by relative box size, one bin per pair of ``edges``.

    Bins are ``[low, high)``, the last one ``[low, high]``, so a whole-image box (1.0) is counted.
    """
    relative = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt() / image_side
    bins = []
    last = len(edges) - 2
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (relative >= low) & ((relative <= high) if index == last else (relative < high))
        count = int(inside.sum())
        bins.append(CoverageBin(
            low=float(low), high=float(high), boxes=count,
            uncovered=float((positives[inside] == 0).float().mean()) if count else 0.0,
            mean_positives=float(positives[inside].float().mean()) if count else 0.0,
            median_best_iou=float(best_iou[inside].median()) if count else 0.0,
        ))
    return bins
