"""The multibox loss: a box term on positives plus a class term.

Box terms (``box_loss``): ``smooth_l1`` on the encoded offsets (SSD's), ``giou`` or ``ciou`` on the
decoded boxes (``torchvision.ops.generalized_box_iou_loss`` / ``complete_box_iou_loss``), or
``smooth_l1+giou``. Class terms (``classification``): ``softmax`` cross-entropy with hard-negative
mining (SSD's), or over sigmoid per-class scores: ``focal`` (``torchvision.ops.sigmoid_focal_loss``),
``varifocal`` (:func:`varifocal_loss`) and ``quality_focal`` (:func:`quality_focal_loss`), whose
targets are the IoU of each positive's decoded box with its ground truth.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import complete_box_iou_loss, generalized_box_iou_loss, sigmoid_focal_loss

from detector.modeling.atss import ATSSMatcher
from detector.modeling.boxes import BoxCoder
from detector.modeling.matching import SSDMatcher

CLASSIFICATIONS = ("softmax", "focal", "varifocal", "quality_focal")
BOX_LOSSES = ("smooth_l1", "giou", "ciou", "smooth_l1+giou")
# The class terms whose targets are the IoU of the predicted box (VarifocalNet, GFL).
IOU_AWARE = ("varifocal", "quality_focal")


def varifocal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.75, gamma: float = 2.0) -> Tensor:
    """Varifocal loss (Zhang et al. 2021, VarifocalNet, eq. 2), summed; torchvision has none.

    ``VFL(p, q) = -q (q log p + (1 - q) log(1 - p))`` where ``q > 0`` (a positive's class, ``q`` its
    IoU target) and ``-alpha p^gamma log(1 - p)`` where ``q = 0``, with ``p = sigmoid(logit)``:
    positives are weighted by their own target, only negatives are down-weighted. The weights are not
    detached (the paper's formula, differentiated whole, as ``sigmoid_focal_loss`` does too).

    Args:
        logits: ``[...]`` raw scores; targets: ``[...]`` in ``[0, 1]``, same shape.
    """
    p = logits.sigmoid()
    weight = torch.where(targets > 0, targets, alpha * p.pow(gamma))
    return (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weight).sum()


def quality_focal_loss(logits: Tensor, targets: Tensor, beta: float = 2.0) -> Tensor:
    """Quality focal loss (Li et al. 2020, Generalized Focal Loss, eq. 5), summed; torchvision has none.

    ``QFL(sigma) = -|y - sigma|^beta ((1 - y) log(1 - sigma) + y log(sigma))`` with ``sigma =
    sigmoid(logit)`` and the soft target ``y`` (a positive's IoU at its class, 0 elsewhere).

    Args:
        logits: ``[...]`` raw scores; targets: ``[...]`` in ``[0, 1]``, same shape.
    """
    modulator = (targets - logits.sigmoid()).abs().pow(beta)
    return (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * modulator).sum()


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of ``boxes1[i]`` with ``boxes2[i]`` (``[N, 4]`` xyxy each) -> ``[N]``.

    Written out because ``torchvision.ops.box_iou`` is all-pairs (``[N, N]``), of which this is only the
    diagonal.
    """
    top_left = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    bottom_right = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(dim=1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(dim=1)
    return inter / (area1 + area2 - inter).clamp(min=torch.finfo(inter.dtype).eps)


class MultiBoxLoss(nn.Module):
    """SSD's training objective, and the newer options of the same shape.

    For each image, anchors are matched to ground truth by ``matcher`` (:class:`SSDMatcher`: max IoU;
    :class:`ATSSMatcher`: adaptive per-box threshold over per-level candidates). The box loss
    (``box_loss``) is over positive anchors only:

    - ``smooth_l1``: smooth-L1 (beta 1) on the encoded offsets (SSD's);
    - ``giou`` / ``ciou``: ``box_loss_weight`` x the generalized / complete IoU loss of the decoded
      boxes (xyxy, input pixels) with their ground truth;
    - ``smooth_l1+giou``: the sum of both.

    The class loss (``classification``) is either softmax cross-entropy over positives and the
    hardest negatives (at most ``neg_pos_ratio`` negatives per positive, at least
    ``min_negatives_per_image`` so images without boxes still teach background), or one over the
    sigmoid scores of the foreground classes at every anchor (background has no score): ``focal``
    (target 1 at a positive's class), ``varifocal`` or ``quality_focal`` (target the IoU of the
    positive's decoded box with its ground truth, detached; 0 elsewhere). Every term is summed over
    the batch and divided by the number of positive anchors (at least 1), as SSD, VarifocalNet and
    GFL normalise.
    """

    def __init__(
        self,
        box_coder: BoxCoder,
        matcher: SSDMatcher | ATSSMatcher,
        classification: str = "softmax",
        neg_pos_ratio: float = 3.0,
        min_negatives_per_image: int = 3,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_weight: float = 1.0,
        box_loss: str = "smooth_l1",
        box_loss_weight: float = 2.0,
        varifocal_alpha: float = 0.75,
        varifocal_gamma: float = 2.0,
        quality_focal_beta: float = 2.0,
    ) -> None:
        super().__init__()
        if classification not in CLASSIFICATIONS:
            raise ValueError(f"classification must be one of {CLASSIFICATIONS} ('softmax', 'focal', ...), "
                             f"got {classification!r}")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        self.box_coder = box_coder
        self.matcher = matcher
        self.classification = classification
        self.neg_pos_ratio = neg_pos_ratio
        self.min_negatives_per_image = min_negatives_per_image
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.box_weight = box_weight
        self.box_loss = box_loss
        self.box_loss_weight = box_loss_weight
        self.varifocal_alpha = varifocal_alpha
        self.varifocal_gamma = varifocal_gamma
        self.quality_focal_beta = quality_focal_beta

    def match(
        self, targets: list[dict[str, Tensor]], anchors: Tensor, anchor_levels: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Class targets ``[B, A]`` (0 = background) and matched ground-truth boxes ``[B, A, 4]`` (xyxy).

        ``anchor_levels`` (``[A]``) goes to the matcher (ATSS needs it). Ground-truth boxes with zero
        width or height are ignored.
        """
        labels, boxes = [], []
        for target in targets:
            gt_boxes = target["boxes"].to(anchors).reshape(-1, 4)
            gt_labels = target["labels"].to(device=anchors.device, dtype=torch.int64).reshape(-1)
            # A box without area cannot be encoded (log 0) and would steal an anchor by the forced
            # match (its IoU is 0 everywhere): leave it out.
            valid = (gt_boxes[:, 2] > gt_boxes[:, 0]) & (gt_boxes[:, 3] > gt_boxes[:, 1])
            gt_boxes, gt_labels = gt_boxes[valid], gt_labels[valid]
            matches = self.matcher(gt_boxes, anchors, anchor_levels)
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
        self,
        cls_logits: Tensor,
        bbox_regression: Tensor,
        anchors: Tensor,
        targets: list[dict[str, Tensor]],
        anchor_levels: Tensor | None = None,
        unlabelled_classes: Sequence[int] = (),
    ) -> dict[str, Tensor]:
        """Compute the loss.

        Args:
            cls_logits: ``[B, A, C]`` logits, class 0 is background.
            bbox_regression: ``[B, A, 4]`` encoded offsets.
            anchors: ``[A, 4]`` xyxy in input pixels.
            targets: per image ``{"boxes": FloatTensor[N, 4] xyxy input pixels,
                "labels": Int64Tensor[N] in 1..C-1}``; ``N`` may be 0.
            anchor_levels: ``[A]`` pyramid level of each anchor (``SSDLite.anchor_levels``); needed
                by the ATSS matcher only.
            unlabelled_classes: labels the targets never carry (a class taught by distillation,
                :mod:`detector.training.distillation`): their scores get no class loss, where they
                would otherwise learn "absent everywhere". Sigmoid classifications only.

        Returns:
            ``{"loss", "loss_box", "loss_cls", "num_positives"}``.
        """
        cls_logits = cls_logits.float()
        bbox_regression = bbox_regression.float()
        # The foreground score columns the class loss covers (background, column 0, has none).
        labelled = torch.ones(cls_logits.shape[-1] - 1, dtype=torch.bool, device=cls_logits.device)
        if len(unlabelled_classes):
            if self.classification == "softmax":
                raise ValueError("unlabelled_classes needs sigmoid scores (classification 'focal', ...): "
                                 "softmax ties every class to background")
            labelled[torch.as_tensor(list(unlabelled_classes), device=cls_logits.device) - 1] = False
        with torch.no_grad():
            gt_labels, gt_boxes = self.match(targets, anchors, anchor_levels)
        positive = gt_labels > 0
        num_pos = positive.sum()
        normaliser = num_pos.clamp(min=1).float()

        positive_anchors = anchors.expand_as(gt_boxes)[positive]  # [P, 4]
        positive_gt = gt_boxes[positive]  # [P, 4]
        if self.box_loss in ("smooth_l1", "smooth_l1+giou"):
            box_targets = self.box_coder.encode(positive_gt, positive_anchors)
            loss_box = F.smooth_l1_loss(bbox_regression[positive], box_targets, beta=1.0, reduction="sum")
        else:
            loss_box = bbox_regression.new_zeros(())
        decoded = None
        if self.box_loss != "smooth_l1" or self.classification in IOU_AWARE:
            decoded = self.box_coder.decode(bbox_regression[positive], positive_anchors)  # [P, 4] xyxy
        if self.box_loss in ("giou", "smooth_l1+giou"):
            loss_box = loss_box + self.box_loss_weight * generalized_box_iou_loss(decoded, positive_gt, reduction="sum")
        elif self.box_loss == "ciou":
            loss_box = loss_box + self.box_loss_weight * complete_box_iou_loss(decoded, positive_gt, reduction="sum")

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
        elif self.classification == "focal":
            one_hot = F.one_hot(gt_labels, cls_logits.shape[-1])[..., 1:].to(cls_logits)
            loss_cls = sigmoid_focal_loss(
                cls_logits[..., 1:][..., labelled], one_hot[..., labelled],
                alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
            )
        else:
            # Soft targets: the positive's class gets the IoU its decoded box reaches (no gradient into
            # the boxes through it, as in both papers), every other (anchor, class) 0.
            one_hot = F.one_hot(gt_labels, cls_logits.shape[-1])[..., 1:].to(cls_logits)
            quality = torch.zeros_like(gt_labels, dtype=cls_logits.dtype)
            quality[positive] = aligned_box_iou(decoded.detach(), positive_gt).clamp(0.0, 1.0)
            soft_targets = (one_hot * quality[..., None])[..., labelled]
            scores = cls_logits[..., 1:][..., labelled]
            if self.classification == "varifocal":
                loss_cls = varifocal_loss(scores, soft_targets, self.varifocal_alpha, self.varifocal_gamma)
            else:
                loss_cls = quality_focal_loss(scores, soft_targets, self.quality_focal_beta)

        loss_box = self.box_weight * loss_box / normaliser
        loss_cls = loss_cls / normaliser
        return {
            "loss": loss_box + loss_cls,
            "loss_box": loss_box,
            "loss_cls": loss_cls,
            "num_positives": num_pos,
        }
