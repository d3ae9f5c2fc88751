"""Anchor-to-ground-truth matching for SSD (max IoU). ATSS, the other assigner, is in
:mod:`detector.modeling.atss`; both are called as ``matcher(gt_boxes, anchors, anchor_levels)``."""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou


class SSDMatcher:
    """Assigns each anchor the index of a ground-truth box, or -1 for background.

    An anchor matches the box it overlaps most when that IoU is at least ``iou_threshold``; then
    every ground truth is forced onto its best anchor, so no box goes unmatched.

    Example, 2 boxes x 3 anchors, threshold 0.5::

        iou = [[0.6, 0.2, 0.1],      argmax over boxes: [0, 1, 1], best IoU: [0.6, 0.3, 0.4]
               [0.1, 0.3, 0.4]]      threshold -> [0, -1, -1]; box 1's best anchor is 2
        matches = [0, -1, 1]
    """

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = iou_threshold

    def __call__(self, gt_boxes: Tensor, anchors: Tensor, anchor_levels: Tensor | None = None) -> Tensor:
        """Match ``gt_boxes`` (``[G, 4]`` xyxy) to ``anchors`` (``[A, 4]`` xyxy, same frame).

        ``anchor_levels`` (``[A]``) is unused: IoU matching ignores the pyramid; it is accepted so that
        every matcher is called alike (:class:`detector.modeling.atss.ATSSMatcher` needs it).

        Returns:
            Tensor[A] (int64): ground-truth index per anchor, -1 for background.
        """
        num_anchors = anchors.shape[0]
        if gt_boxes.numel() == 0:
            return torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
        iou = box_iou(gt_boxes, anchors)  # [G, A]
        best_iou, matches = iou.max(dim=0)
        matches = torch.where(best_iou >= self.iou_threshold, matches, torch.full_like(matches, -1))
        # Force each ground truth onto its best anchor; a later box wins a shared anchor.
        best_anchor = iou.argmax(dim=1)
        matches[best_anchor] = torch.arange(gt_boxes.shape[0], device=anchors.device)
        return matches
