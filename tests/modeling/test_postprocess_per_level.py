"""PostProcessor(topk_per="level"): mmdetection's nms_pre (the k best (anchor, class) pairs of each level),
against a per-image, per-level loop written the way mmdetection's filter_scores_and_topk does it."""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from detector.modeling.boxes import BoxCoder
from detector.modeling.postprocess import PostProcessor


def reference(cls_logits, bbox_regression, anchors, levels, size, threshold, k, nms, cap, min_size):
    coder = BoxCoder()
    out = []
    for logits, codes in zip(cls_logits, bbox_regression):
        scores = logits.softmax(-1)[:, 1:]
        boxes, kept_scores, labels = [], [], []
        for level in range(int(levels.max()) + 1):
            rows = (levels == level).nonzero().squeeze(1)
            level_scores = scores[rows]
            valid = (level_scores > threshold).nonzero()
            values = level_scores[valid[:, 0], valid[:, 1]]
            values, order = values.sort(descending=True)
            valid = valid[order[:k]]
            anchor = rows[valid[:, 0]]
            boxes.append(coder.decode(codes[anchor], anchors[anchor]))
            kept_scores.append(values[:k])
            labels.append(valid[:, 1] + 1)
        boxes, kept_scores, labels = torch.cat(boxes), torch.cat(kept_scores), torch.cat(labels)
        boxes = boxes.clamp(min=0).minimum(torch.tensor([size, size, size, size], dtype=boxes.dtype))
        wh = boxes[:, 2:] - boxes[:, :2]
        valid = (wh[:, 0] > min_size) & (wh[:, 1] > min_size)
        boxes, kept_scores, labels = boxes[valid], kept_scores[valid], labels[valid]
        keep = batched_nms(boxes, kept_scores, labels, nms)[:cap]
        out.append({"boxes": boxes[keep], "scores": kept_scores[keep], "labels": labels[keep]})
    return out


def test_per_level_topk_matches_the_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    size, per_level = 64, (200, 50, 10)
    levels = torch.repeat_interleave(torch.arange(3), torch.tensor(per_level))
    centres = torch.rand(len(levels), 2, generator=generator) * size
    centres[:60:3, 0] = size + 40  # right of the image: clipped to zero width, the min-size filter drops them
    half = torch.rand(len(levels), 2, generator=generator) * 12 + 2
    anchors = torch.cat((centres - half, centres + half), dim=1)
    cls_logits = torch.randn(2, len(levels), 5, generator=generator) * 2
    bbox_regression = torch.randn(2, len(levels), 4, generator=generator)
    settings = dict(threshold=0.05, k=30, nms=0.45, cap=40, min_size=0.0)
    post = PostProcessor(BoxCoder(), score_threshold=0.05, nms_threshold=0.45, topk_candidates=30,
                         max_detections=40, topk_per="level", min_box_size=0.0)
    ours = post(cls_logits, bbox_regression, anchors, (size, size), anchor_levels=levels)
    expected = reference(cls_logits, bbox_regression, anchors, levels, size, **settings)
    for mine, theirs in zip(ours, expected):
        assert len(theirs["boxes"]) == 40  # the cap binds: the level top-k and NMS both matter here
        assert bool((mine["boxes"][:, 2] > mine["boxes"][:, 0]).all())
        assert torch.equal(mine["labels"], theirs["labels"])
        torch.testing.assert_close(mine["scores"], theirs["scores"])
        torch.testing.assert_close(mine["boxes"], theirs["boxes"])


def test_per_level_needs_the_levels() -> None:
    post = PostProcessor(BoxCoder(), topk_per="level")
    try:
        post(torch.zeros(1, 4, 3), torch.zeros(1, 4, 4), torch.ones(4, 4), (8, 8))
    except ValueError as error:
        assert "anchor_levels" in str(error)
    else:
        raise AssertionError("expected a ValueError")
