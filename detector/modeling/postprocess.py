"""Inference post-processing: scores, top-k per class, batched NMS, boxes back to image pixels."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from detector.modeling.boxes import BoxCoder, scale_boxes_to_image
from detector.threads import single_threaded

# The classification losses that train per-class sigmoid scores; the others ("softmax") score by a
# softmax over background and classes.
SIGMOID_CLASSIFICATIONS = ("focal", "varifocal", "quality_focal")


class PostProcessor:
    """Turns raw head outputs into final detections per image.

    Every step is vectorised over images and classes, and only the candidates are ever gathered,
    decoded or sorted:

    1. **Candidates** ((image, anchor, class) with score above ``score_threshold``). With softmax
       scores, ``p_c = exp(l_c) / sum_j exp(l_j) <= exp(l_c - l_0)`` (``l_0`` the background
       logit), so an anchor whose best foreground logit is not above ``l_0 + log(score_threshold)``
       has no candidate: one max over the classes rules out almost every anchor when the background
       dominates, and the softmax runs on the rows of the remaining anchors only (the same per-row
       softmax, so the same scores; a full softmax costs more than everything else together on the
       CPU). Sigmoid scores are compared with the threshold directly.
    2. **Top-k per class**: at most ``topk_candidates`` per (image, class), the best ones; equal to
       taking the top-k over anchors first and thresholding after (torchvision's order is the
       reverse; the set is the same). Only done when some class has more candidates than that.
    3. One decode of the candidates and one ``torchvision.ops.batched_nms`` call for the whole batch
       (the group id is image * classes + class, so boxes of different images or classes never
       suppress each other), then the per-image cap and the rescale to the original size.

    It runs on one thread (:func:`detector.threads.single_threaded`): its ops are too small to gain
    from more.

    The result equals torchvision's ``SSD.postprocess_detections`` + ``transform.postprocess`` with
    the same settings (tests compare against a per-image, per-class loop). Fewer, larger tensor ops
    are the point: at a few hundred candidates the cost is per-op overhead, not arithmetic.

    ``clip_before_nms``: boxes are clipped to the input before NMS (torchvision, mmdetection) or, with
    ``False``, after it (TF's Object Detection API: NMS compares the unclipped boxes, then clips them
    and drops those left with no area when ``min_box_size=0``). The two keep different boxes
    where boxes cross the image border.

    ``classification`` names the loss the model was trained with: ``"softmax"`` gives softmax scores,
    every name of ``SIGMOID_CLASSIFICATIONS`` (``"focal"``, ``"varifocal"``, ``"quality_focal"``)
    sigmoid scores, and is kept as ``"focal"``: decoding differs only by the scoring, and ``"focal"``
    is the sigmoid name the ONNX NMS graph and exported metadata already know.
    """

    def __init__(
        self,
        box_coder: BoxCoder,
        score_threshold: float = 0.01,
        nms_threshold: float = 0.55,
        topk_candidates: int = 300,
        max_detections: int = 100,
        classification: str = "softmax",
        topk_per: str = "class",
        min_box_size: float | None = None,
        clip_before_nms: bool = True,
    ) -> None:
        if topk_per not in ("class", "level"):
            raise ValueError(f"topk_per must be 'class' or 'level', got {topk_per!r}")
        self.box_coder = box_coder
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.topk_candidates = topk_candidates
        self.max_detections = max_detections
        self.classification = "focal" if classification in SIGMOID_CLASSIFICATIONS else classification
        self.topk_per = topk_per
        self.min_box_size = min_box_size
        self.clip_before_nms = clip_before_nms

    def scores(self, cls_logits: Tensor) -> Tensor:
        """Foreground class probabilities ``[B, A, C - 1]`` from logits ``[B, A, C]``."""
        if self.classification == "focal":
            return cls_logits[..., 1:].sigmoid()
        return cls_logits.softmax(dim=-1)[..., 1:]

    def candidates(self, cls_logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Every (image, anchor, foreground class) whose score is above ``score_threshold``.

        Returns:
            ``image_idx``, ``anchor_idx``, ``class_idx`` (0-based over the foreground classes, i.e.
            label - 1), all Int64Tensor[N], and ``scores`` FloatTensor[N], in (image, anchor, class)
            order.
        """
        logits = cls_logits.float()
        threshold = self.score_threshold
        if self.classification == "focal":
            scores = logits[..., 1:].sigmoid()
            image_idx, anchor_idx, class_idx = (scores > threshold).nonzero(as_tuple=True)
            return image_idx, anchor_idx, class_idx, scores[image_idx, anchor_idx, class_idx]
        if threshold <= 0:
            probs = logits.softmax(dim=-1)[..., 1:]
            image_idx, anchor_idx, class_idx = (probs > threshold).nonzero(as_tuple=True)
            return image_idx, anchor_idx, class_idx, probs[image_idx, anchor_idx, class_idx]
        num_anchors, num_classes = logits.shape[1:]
        rows = logits.reshape(-1, num_classes)  # [B * A, C]
        # p_c = exp(l_c) / sum_j exp(l_j) <= exp(l_c - l_0): an anchor whose best foreground logit is
        # not above l_0 + log(threshold) has no candidate. One max over the classes rules out almost
        # every anchor when the background dominates; a small margin keeps rounding on the safe side.
        maybe = rows[:, 1:].amax(dim=1) > rows[:, 0] + (math.log(threshold) - 1e-3)
        row_idx = maybe.nonzero().squeeze(1)  # ascending, so (image, anchor) order
        probs = rows[row_idx].softmax(dim=1)[:, 1:]  # exact softmax, of those rows only
        of_row, class_idx = (probs > threshold).nonzero(as_tuple=True)
        row_idx = row_idx[of_row]
        return row_idx // num_anchors, row_idx % num_anchors, class_idx, probs[of_row, class_idx]

    @torch.no_grad()
    def __call__(
        self,
        cls_logits: Tensor,
        bbox_regression: Tensor,
        anchors: Tensor,
        input_size: tuple[int, int],
        image_sizes: Sequence[tuple[int, int]] | None = None,
        anchor_levels: Tensor | None = None,
    ) -> list[dict[str, Tensor]]:
        """Final detections.

        Args:
            cls_logits: ``[B, A, C]`` logits (class 0 background).
            bbox_regression: ``[B, A, 4]`` encoded offsets.
            anchors: ``[A, 4]`` xyxy in network-input pixels.
            input_size: ``(H, W)`` of the network input.
            image_sizes: original ``(h, w)`` of each image; boxes are mapped to it with
                :func:`detector.modeling.boxes.scale_boxes_to_image`. ``None`` keeps network-input pixels.
            anchor_levels: ``[A]`` pyramid level of each anchor; needed with ``topk_per="level"``
                (mmdetection's ``nms_pre``: the ``topk_candidates`` best (anchor, class) pairs of each
                level, rather than of each class).

        Returns:
            One dict per image: ``boxes`` FloatTensor[N, 4] xyxy, ``scores`` FloatTensor[N],
            ``labels`` Int64Tensor[N] in 1..C-1, sorted by descending score, ``N <= max_detections``.
        """
        with single_threaded():
            return self._detections(cls_logits, bbox_regression, anchors, input_size, image_sizes, anchor_levels)

    def _detections(
        self,
        cls_logits: Tensor,
        bbox_regression: Tensor,
        anchors: Tensor,
        input_size: tuple[int, int],
        image_sizes: Sequence[tuple[int, int]] | None,
        anchor_levels: Tensor | None,
    ) -> list[dict[str, Tensor]]:
        batch, num_anchors, num_classes = cls_logits.shape
        num_fg = num_classes - 1
        image_idx, cand_anchor, class_idx, cand_scores = self.candidates(cls_logits)
        groups = image_idx * num_fg + class_idx
        if self.topk_per == "level":
            if anchor_levels is None:
                raise ValueError("topk_per='level' needs anchor_levels, the level of each anchor")
            num_levels = int(anchor_levels.max()) + 1
            level_groups = image_idx * num_levels + anchor_levels[cand_anchor]
            order = self._topk_per_group(cand_scores, level_groups, batch * num_levels, self.topk_candidates)
        else:
            order = self._topk_per_group(cand_scores, groups, batch * num_fg, min(self.topk_candidates, num_anchors))
        if order is not None:
            image_idx, cand_anchor, class_idx = image_idx[order], cand_anchor[order], class_idx[order]
            cand_scores, groups = cand_scores[order], groups[order]
        codes = bbox_regression.reshape(-1, 4)[image_idx * num_anchors + cand_anchor].float()
        boxes = self.box_coder.decode(codes, anchors[cand_anchor])
        in_h, in_w = input_size
        limit = boxes.new_tensor([in_w, in_h, in_w, in_h])
        if self.clip_before_nms:
            # clip_boxes_to_image's result in two ops instead of eight (this path is op-overhead bound).
            boxes = torch.minimum(boxes.clamp(min=0), limit)
            if self.min_box_size is not None:  # mmdetection drops boxes no larger than this after clipping
                valid = self._large_enough(boxes)
                image_idx, class_idx, cand_scores = image_idx[valid], class_idx[valid], cand_scores[valid]
                boxes, groups = boxes[valid], groups[valid]
            kept = batched_nms(boxes, cand_scores, groups, self.nms_threshold)  # by descending score
        else:
            kept = batched_nms(boxes, cand_scores, groups, self.nms_threshold)
            boxes = torch.minimum(boxes.clamp(min=0), limit)
            if self.min_box_size is not None:  # TF's ClipToWindow: survivors left with no area go
                kept = kept[self._large_enough(boxes[kept])]
        kept, kept_image, counts = self._cap_per_image(kept, image_idx, batch)
        out_boxes = boxes[kept]
        if image_sizes is not None:
            sizes = torch.as_tensor([[int(h), int(w)] for h, w in image_sizes], device=out_boxes.device)
            out_boxes = scale_boxes_to_image(out_boxes, input_size, sizes[0] if kept_image is None else sizes[kept_image])
        out_scores = cand_scores[kept]
        out_labels = class_idx[kept] + 1
        return [
            {"boxes": b, "scores": s, "labels": l}
            for b, s, l in zip(out_boxes.split(counts), out_scores.split(counts), out_labels.split(counts))
        ]

    def _large_enough(self, boxes: Tensor) -> Tensor:
        """Indices of the ``boxes`` (xyxy) wider and taller than ``min_box_size``."""
        sizes = boxes[:, 2:] - boxes[:, :2]
        return ((sizes[:, 0] > self.min_box_size) & (sizes[:, 1] > self.min_box_size)).nonzero().squeeze(1)

    @staticmethod
    def _topk_per_group(scores: Tensor, groups: Tensor, num_groups: int, k: int) -> Tensor | None:
        """Indices of the ``k`` best candidates of each (image, class) group, or ``None`` when no group
        has more than ``k`` (then every candidate stays, in its order)."""
        if scores.numel() <= k:
            return None
        counts = torch.bincount(groups, minlength=num_groups)
        if int(counts.max()) <= k:
            return None
        order = scores.argsort(descending=True, stable=True)
        order = order[groups[order].argsort(stable=True)]  # by group, best first inside
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(order.numel(), device=order.device) - starts[groups[order]]
        return order[rank < k]

    def _cap_per_image(self, kept: Tensor, image_idx: Tensor, batch: int) -> tuple[Tensor, Tensor | None, list[int]]:
        """The first ``max_detections`` NMS survivors (``kept``, descending score) of each image, grouped
        by image; returns them, their image index (``None`` for a batch of one) and the count per image."""
        if batch == 1:
            kept = kept[: self.max_detections]
            return kept, None, [kept.numel()]
        kept_image = image_idx[kept]
        # Stable sort by image keeps score order inside each image; rank < max_detections.
        order = kept_image.argsort(stable=True)
        kept, kept_image = kept[order], kept_image[order]
        per_image = torch.bincount(kept_image, minlength=batch)
        starts = torch.cumsum(per_image, 0) - per_image
        rank = torch.arange(kept.numel(), device=kept.device) - starts[kept_image]
        selected = rank < self.max_detections
        kept, kept_image = kept[selected], kept_image[selected]
        return kept, kept_image, torch.bincount(kept_image, minlength=batch).tolist()
