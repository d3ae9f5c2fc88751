"""What the zoo's equivalence checks share: weights that make a wrong conversion show, and the
comparison of converted models with their framework's recorded detections."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give ``model`` random conv weights and non-trivial BatchNorm statistics and affine terms, in
    place, and put it in eval mode. Freshly built models have BN at mean 0, variance 1, weight 1, bias
    0, under which a mixed-up BN mapping would go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_((torch.rand(module.bias.shape, generator=generator) - 0.5) * 0.4)
            elif isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model.eval()


def tensorflow_detections(reference: Mapping[str, np.ndarray], index: int, image_size: tuple[int, int]) -> dict[str, Tensor]:
    """Image ``index``'s detections as a TF OD API graph returned them (``tools/tf_reference.py``'s
    record: ``(ymin, xmin, ymax, xmax)`` in 0..1, 1-based classes), in this package's form: ``boxes``
    ``[N, 4]`` xyxy in the ``(h, w)`` image's pixels, ``scores``, ``labels``."""
    count = int(reference[f"num_detections_{index}"])
    h, w = image_size
    boxes = reference[f"detection_boxes_{index}"][:count].astype(np.float64) * np.array([h, w, h, w])
    return {
        "boxes": torch.from_numpy(boxes[:, [1, 0, 3, 2]].astype(np.float32)),
        "scores": torch.from_numpy(reference[f"detection_scores_{index}"][:count].astype(np.float32)),
        "labels": torch.from_numpy(reference[f"detection_classes_{index}"][:count].astype(np.int64)),
    }


def compare_detections(ours: Mapping[str, Tensor], theirs: Mapping[str, Tensor], score_tolerance: float = 1e-5,
                       min_iou: float = 0.999) -> dict[str, Any]:
    """Match two detection lists one to one: same label, IoU at least ``min_iou``, scores within
    ``score_tolerance``. Returns the counts, the detections of ``theirs`` left unmatched (``missed``)
    and, of those, how many tie within ``score_tolerance`` with the weakest detection kept (at a
    detection cap, near-equal scores may keep either box), and the largest box (pixels) and score
    differences of the matched pairs."""
    a_boxes, b_boxes = torch.as_tensor(ours["boxes"]).float(), torch.as_tensor(theirs["boxes"]).float()
    a_scores, b_scores = torch.as_tensor(ours["scores"]).float(), torch.as_tensor(theirs["scores"]).float()
    a_labels, b_labels = torch.as_tensor(ours["labels"]), torch.as_tensor(theirs["labels"])
    result: dict[str, Any] = {"ours": len(a_boxes), "theirs": len(b_boxes), "matched": 0, "missed": 0,
                              "missed_at_cut": 0, "max_box_diff": 0.0, "max_score_diff": 0.0}
    if len(a_boxes) == 0 or len(b_boxes) == 0:
        result["missed"] = len(b_boxes)
        return result
    ok = ((box_iou(b_boxes, a_boxes) >= min_iou) & (b_labels[:, None] == a_labels[None])
          & ((b_scores[:, None] - a_scores[None]).abs() <= score_tolerance))
    cut = float(min(a_scores.min(), b_scores.min()))
    used: set[int] = set()
    for i in range(len(b_boxes)):
        free = [j for j in ok[i].nonzero().flatten().tolist() if j not in used]
        if not free:
            result["missed"] += 1
            result["missed_at_cut"] += int(float(b_scores[i]) - cut <= score_tolerance)
            continue
        j = free[0]
        used.add(j)
        result["matched"] += 1
        result["max_box_diff"] = max(result["max_box_diff"], float((a_boxes[j] - b_boxes[i]).abs().max()))
        result["max_score_diff"] = max(result["max_score_diff"], float((a_scores[j] - b_scores[i]).abs()))
    return result
