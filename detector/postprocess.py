"""Inference post-processing: scores, top-k per class, batched NMS, boxes back to image pixels."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image

from detector.boxes import BoxCoder


class PostProcessor:
    """Turns raw head outputs into final detections per image.

    Every step is vectorised over images and classes: one softmax, one ``topk`` over anchors for
    all classes at once, one decode of the surviving candidates only, and one
    ``torchvision.ops.batched_nms`` call for the whole batch (the group id is image * classes +
    class, so boxes of different images or classes never suppress each other).
    """

    def __init__(
        self,
        box_coder: BoxCoder,
        score_threshold: float = 0.01,
        nms_threshold: float = 0.55,
        topk_candidates: int = 300,
        max_detections: int = 100,
        classification: str = "softmax",
    ) -> None:
        self.box_coder = box_coder
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.topk_candidates = topk_candidates
        self.max_detections = max_detections
        self.classification = classification

    def scores(self, cls_logits: Tensor) -> Tensor:
        """Foreground class probabilities ``[B, A, C - 1]`` from logits ``[B, A, C]``."""
        if self.classification == "focal":
            return cls_logits[..., 1:].sigmoid()
        return cls_logits.softmax(dim=-1)[..., 1:]

    @torch.no_grad()
    def __call__(
        self,
        cls_logits: Tensor,
        bbox_regression: Tensor,
        anchors: Tensor,
        input_size: tuple[int, int],
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[dict[str, Tensor]]:
        """Final detections.

        Args:
            cls_logits: ``[B, A, C]`` logits (class 0 background).
            bbox_regression: ``[B, A, 4]`` encoded offsets.
            anchors: ``[A, 4]`` xyxy in network-input pixels.
            input_size: ``(H, W)`` of the network input.
            image_sizes: original ``(H, W)`` of each image; boxes are scaled to it and clipped.
                ``None`` keeps network-input pixels.

        Returns:
            One dict per image: ``boxes`` FloatTensor[N, 4] xyxy, ``scores`` FloatTensor[N],
            ``labels`` Int64Tensor[N] in 1..C-1, sorted by descending score, ``N <= max_detections``.
        """
        batch, num_anchors, num_classes = cls_logits.shape
        num_fg = num_classes - 1
        scores = self.scores(cls_logits.float())  # [B, A, K]
        k = min(self.topk_candidates, num_anchors)
        top_scores, top_anchor = scores.topk(k, dim=1)  # [B, k, K], per class
        keep = top_scores > self.score_threshold
        image_idx, _, class_idx = keep.nonzero(as_tuple=True)
        cand_scores = top_scores[keep]
        cand_anchor = top_anchor[keep]
        cand_codes = bbox_regression[image_idx, cand_anchor].float()
        boxes = self.box_coder.decode(cand_codes, anchors[cand_anchor])
        boxes = clip_boxes_to_image(boxes, input_size)

        groups = image_idx * num_fg + class_idx
        kept = batched_nms(boxes, cand_scores, groups, self.nms_threshold)  # by descending score
        kept_image = image_idx[kept]
        # Stable sort by image keeps score order inside each image; rank < max_detections.
        order = kept_image.argsort(stable=True)
        kept, kept_image = kept[order], kept_image[order]
        counts = torch.bincount(kept_image, minlength=batch)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(kept.numel(), device=kept.device) - starts[kept_image]
        selected = rank < self.max_detections
        kept, kept_image = kept[selected], kept_image[selected]
        counts = torch.bincount(kept_image, minlength=batch).tolist()

        out_boxes = boxes[kept]
        if image_sizes is not None:
            in_h, in_w = input_size
            sizes = torch.as_tensor(image_sizes, dtype=torch.float32, device=out_boxes.device).reshape(-1, 2)
            sizes = sizes[kept_image]  # [N, 2] (h, w)
            scale = torch.stack((sizes[:, 1] / in_w, sizes[:, 0] / in_h), dim=1).repeat(1, 2)
            out_boxes = out_boxes * scale
            out_boxes = torch.minimum(out_boxes.clamp(min=0), sizes.flip(1).repeat(1, 2))
        out_scores = cand_scores[kept]
        out_labels = class_idx[kept] + 1
        return [
            {"boxes": b, "scores": s, "labels": l}
            for b, s, l in zip(out_boxes.split(counts), out_scores.split(counts), out_labels.split(counts))
        ]
