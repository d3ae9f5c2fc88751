"""Adaptive Training Sample Selection (ATSS; Zhang et al. 2020, "Bridging the Gap Between Anchor-based
and Anchor-free Detection via Adaptive Training Sample Selection")."""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

# The authors' code keeps an anchor only when its centre is more than this many pixels inside the box.
CENTRE_MARGIN = 0.01


class ATSSMatcher:
    """Assigns each anchor the index of a ground-truth box, or -1 for background, the ATSS way.

    For each ground truth ``g``:

    1. **Candidates**: on every pyramid level, the ``topk`` anchors whose centres are nearest
       (L2) to ``g``'s centre (all of a level's anchors when it has fewer; equal distances keep
       anchor order, so the ``k``-th place is deterministic when several default boxes share a
       centre).
    2. **Threshold**: ``t_g = mean + std`` of the candidates' IoUs with ``g`` (``std`` with Bessel's
       correction, ``torch.std``'s default, as the authors' code; 0 for a single candidate).
    3. **Positives**: candidates with ``IoU >= t_g`` whose centre lies inside ``g`` (by more than
       ``CENTRE_MARGIN`` pixels from every side).

    An anchor that is a positive of several boxes goes to the one it overlaps most (the lower index
    on an exact tie). There is no forced match: as in the paper, a box whose candidates all fail the
    centre rule (one much smaller than its level's stride) has no positive.

    Example, one box ``[0, 0, 10, 10]``, ``topk=2``, two levels: level 0's nearest anchors have IoUs
    ``0.6, 0.4``, level 1's ``0.2, 0.0``; mean 0.3, std 0.258, ``t = 0.558``: only the 0.6 anchor is
    a candidate above it, and it is a positive if its centre is inside the box.

    Args:
        topk: candidates per level per ground truth (the paper's ``k``, 9).
    """

    def __init__(self, topk: int = 9) -> None:
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        self.topk = topk

    def __call__(self, gt_boxes: Tensor, anchors: Tensor, anchor_levels: Tensor | None = None) -> Tensor:
        """Match ``gt_boxes`` (``[G, 4]`` xyxy) to ``anchors`` (``[A, 4]`` xyxy, same frame).

        Args:
            anchor_levels: Int64Tensor[A], the pyramid level of each anchor (``SSDLite.anchor_levels``);
                required: candidates are chosen per level.

        Returns:
            Tensor[A] (int64): ground-truth index per anchor, -1 for background.
        """
        if anchor_levels is None:
            raise ValueError("ATSSMatcher chooses candidates per pyramid level: pass anchor_levels")
        num_anchors = anchors.shape[0]
        matches = torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
        if gt_boxes.numel() == 0:
            return matches
        iou = box_iou(gt_boxes, anchors)  # [G, A]
        gt_centres = 0.5 * (gt_boxes[:, :2] + gt_boxes[:, 2:])  # [G, 2]
        anchor_centres = 0.5 * (anchors[:, :2] + anchors[:, 2:])  # [A, 2]
        # Squared distances rank like distances, and equal centres stay exactly equal (cdist's matmul
        # form would not), so ties fall to the stable sort.
        distances = (gt_centres[:, None, :] - anchor_centres[None, :, :]).pow(2).sum(dim=-1)  # [G, A]

        candidates = []
        for level in anchor_levels.unique().tolist():
            in_level = (anchor_levels == level).nonzero().squeeze(1)
            k = min(self.topk, in_level.numel())
            nearest = distances[:, in_level].argsort(dim=1, stable=True)[:, :k]
            candidates.append(in_level[nearest])
        candidates = torch.cat(candidates, dim=1)  # [G, K]: anchor indices, no repeats within a row

        candidate_iou = iou.gather(1, candidates)  # [G, K]
        spread = candidate_iou.std(dim=1) if candidates.shape[1] > 1 else torch.zeros_like(candidate_iou[:, 0])
        threshold = candidate_iou.mean(dim=1) + spread  # [G]

        centres = anchor_centres[candidates]  # [G, K, 2]
        margins = torch.cat((centres - gt_boxes[:, None, :2], gt_boxes[:, None, 2:] - centres), dim=-1)
        inside = margins.amin(dim=-1) > CENTRE_MARGIN  # [G, K]
        positive = (candidate_iou >= threshold[:, None]) & inside  # [G, K]

        selected = torch.zeros_like(iou, dtype=torch.bool).scatter_(1, candidates, positive)  # [G, A]
        # A positive's IoU is > 0 (its centre is inside the box), so -1 marks "not selected by this box".
        claimed_iou = iou.masked_fill(~selected, -1.0)
        best_iou, best_gt = claimed_iou.max(dim=0)  # first maximum: the lower index on a tie
        return torch.where(best_iou > 0, best_gt, matches)
