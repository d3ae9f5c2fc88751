"""How well a model's default boxes cover a dataset's boxes: the check behind an anchor choice.

An object the matcher can only force onto its single best anchor trains one positive per image;
one overlapped by many anchors trains many. ``docs/benchmarks.md`` ("Quality at a fixed budget")
shows the quickstart's mAP following this count.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["SIZE_EDGES", "CoverageBin", "CoverageReport", "anchor_coverage", "coverage_by_size",
           "coverage_report", "read_coco_boxes"]

# Relative box sizes ``sqrt(w * h) / image side`` at which the report's rows break.
SIZE_EDGES: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0)


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


@dataclass(frozen=True)
class CoverageReport:
    """:func:`coverage_report`'s result: one row per size bin and the ``all`` row over every box."""

    image_size: int | list[int]
    anchors: int
    iou_threshold: float
    by_size: list[CoverageBin]
    total: CoverageBin

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` layout of ``tools/anchor_coverage.py``."""
        return {"image_size": self.image_size, "anchors": self.anchors, "iou_threshold": self.iou_threshold,
                "boxes": self.total.boxes, "no_positive": self.total.uncovered,
                "positives_per_box": self.total.mean_positives, "by_size": [asdict(b) for b in self.by_size]}

    def table(self) -> list[str]:
        """The report as text lines: a header, the non-empty bins, the ``all`` row."""
        lines = [f"{'box size / side':>16} {'boxes':>7} {'no positive':>12} {'positives/box':>14} "
                 f"{'median best IoU':>16}"]
        for row in self.by_size:
            if row.boxes:
                lines.append(f"{row.low:>7.2f} - {row.high:<6.2f} {row.boxes:>7d} {row.uncovered:>12.1%} "
                             f"{row.mean_positives:>14.2f} {row.median_best_iou:>16.3f}")
        total = self.total
        lines.append(f"{'all':>16} {total.boxes:>7d} {total.uncovered:>12.1%} {total.mean_positives:>14.2f}")
        return lines


def coverage_report(boxes: Tensor, anchors: Tensor, iou_threshold: float, image_size: int | Sequence[int],
                    edges: Sequence[float] = SIZE_EDGES) -> CoverageReport:
    """:func:`anchor_coverage` grouped by :func:`coverage_by_size`, plus the row over all boxes.

    Args:
        boxes: Tensor[N, 4] xyxy in the network input (:func:`read_coco_boxes`).
        anchors: Tensor[A, 4] xyxy in the same pixels (``SSDLite.anchors``).
        image_size: the network input, a side or ``(H, W)``; box sizes are relative to ``sqrt(H * W)``.
    """
    height, width = _pair(image_size)
    image_side = math.sqrt(height * width)
    best_iou, positives = anchor_coverage(boxes, anchors, iou_threshold)
    (total,) = coverage_by_size(boxes, image_side, best_iou, positives, (0.0, float("inf")))
    size = height if height == width else [height, width]
    return CoverageReport(image_size=size, anchors=int(anchors.shape[0]), iou_threshold=iou_threshold,
                          by_size=coverage_by_size(boxes, image_side, best_iou, positives, edges), total=total)


def read_coco_boxes(annotation_file: str | PathLike[str], image_size: int | Sequence[int]) -> Tensor:
    """Non-crowd boxes of a COCO file as Tensor[N, 4] xyxy in the network input (a side, or ``(H, W)``).

    Each image is stretched to the input as training resizes it, so x scales by ``W / width``
    and y by ``H / height``. Crowd boxes are left out, as in training.

    Raises:
        ValueError: the file is not readable COCO JSON (the message names it).
    """
    path = Path(annotation_file)
    input_h, input_w = _pair(image_size)
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
        rows = []
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            width, height = sizes[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            sx, sy = input_w / width, input_h / height
            rows.append((x * sx, y * sy, (x + w) * sx, (y + h) * sy))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a readable COCO annotation file ({error!r})") from error
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
