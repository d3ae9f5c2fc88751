"""The multibox loss: smooth-L1 on positives plus hard-negative-mined cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from detector.modeling.boxes import BoxCoder
from detector.modeling.matching import SSDMatcher


class MultiBoxLoss(nn.Module):
    """SSD's training objective.

    For each image, anchors are matched to ground truth (:class:`SSDMatcher`). The box loss is
    smooth-L1 (beta 1) on the encoded offsets of positive anchors. The class loss is either
    softmax cross-entropy over positives and the hardest negatives (at most
    ``neg_pos_ratio`` negatives per positive, at least ``min_negatives_per_image`` so images
    without boxes still teach background), or sigmoid focal loss over all anchors. Both terms
    are summed over the batch and divided by the number of positive anchors (at least 1).
    """

    def __init__(
        self,
        box_coder: BoxCoder,
        matcher: SSDMatcher,
        classification: str = "softmax",
        neg_pos_ratio: float = 3.0,
        min_negatives_per_image: int = 3,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if classification not in ("softmax", "focal"):
            raise ValueError(f"classification must be 'softmax' or 'focal', got {classification!r}")
        self.box_coder = box_coder
        self.matcher = matcher
        self.classification = classification
        self.neg_pos_ratio = neg_pos_ratio
        self.min_negatives_per_image = min_negatives_per_image
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.box_weight = box_weight

    def match(self, targets: list[dict[str, Tensor]], anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Class targets ``[B, A]`` (0 = background) and matched ground-truth boxes ``[B, A, 4]`` (xyxy).

        Ground-truth boxes with zero width or height are ignored.
        """
        labels, boxes = [], []
        for target in targets:
            gt_boxes = target["boxes"].to(anchors).reshape(-1, 4)
            gt_labels = target["labels"].to(device=anchors.device, dtype=torch.int64).reshape(-1)
            # A box without area cannot be encoded (log 0) and would steal an anchor by the forced
            # match (its IoU is 0 everywhere): leave it out.
            valid = (gt_boxes[:, 2] > gt_boxes[:, 0]) & (gt_boxes[:, 3] > gt_boxes[:, 1])
            gt_boxes, gt_labels = gt_boxes[valid], gt_labels[valid]
            matches = self.matcher(gt_boxes, anchors)
            positive = matches >= 0
            safe = matches.clamp(min=0)
            if gt_boxes.numel():
                labels.append(torch.where(positive, gt_labels[safe], 0))
                boxes.append(gt_boxes[safe])
            else:
                labels.append(torch.zeros_like(matches))
                boxes.append(anchors)
        return torch.stack(labels), torch.stack(boxes)

    def forward(
        self, cls_logits: Tensor, bbox_regression: Tensor, anchors: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Compute the loss.

        Args:
            cls_logits: ``[B, A, C]`` logits, class 0 is background.
            bbox_regression: ``[B, A, 4]`` encoded offsets.
            anchors: ``[A, 4]`` xyxy in input pixels.
            targets: per image ``{"boxes": FloatTensor[N, 4] xyxy input pixels,
                "labels": Int64Tensor[N] in 1..C-1}``; ``N`` may be 0.

        Returns:
            ``{"loss", "loss_box", "loss_cls", "num_positives"}``.
        """
        cls_logits = cls_logits.float()
        bbox_regression = bbox_regression.float()
        with torch.no_grad():
            gt_labels, gt_boxes = self.match(targets, anchors)
        positive = gt_labels > 0
        num_pos = positive.sum()
        normaliser = num_pos.clamp(min=1).float()

        box_targets = self.box_coder.encode(gt_boxes[positive], anchors.expand_as(gt_boxes)[positive])
        loss_box = F.smooth_l1_loss(bbox_regression[positive], box_targets, beta=1.0, reduction="sum")

        if self.classification == "softmax":
            ce = F.cross_entropy(cls_logits.flatten(0, 1), gt_labels.flatten(), reduction="none")
            ce = ce.view_as(gt_labels)
            # Hard-negative mining: rank negatives by their loss, keep the top k per image.
            negative_loss = ce.detach().masked_fill(positive, -float("inf"))
            order = negative_loss.argsort(dim=1, descending=True)
            rank = order.argsort(dim=1)
            num_neg = (positive.sum(dim=1, keepdim=True) * self.neg_pos_ratio).long()
            num_neg = num_neg.clamp(min=self.min_negatives_per_image)
            num_neg = torch.minimum(num_neg, (~positive).sum(dim=1, keepdim=True))
            negative = rank < num_neg
            loss_cls = ce[positive | negative].sum()
        else:
            one_hot = F.one_hot(gt_labels, cls_logits.shape[-1])[..., 1:].to(cls_logits)
            loss_cls = sigmoid_focal_loss(
                cls_logits[..., 1:], one_hot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
            )

        loss_box = self.box_weight * loss_box / normaliser
        loss_cls = loss_cls / normaliser
        return {
            "loss": loss_box + loss_cls,
            "loss_box": loss_box,
            "loss_cls": loss_cls,
            "num_positives": num_pos,
        }
