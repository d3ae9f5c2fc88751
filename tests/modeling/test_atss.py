"""ATSSMatcher against the paper's rule on hand-worked cases, and against a plain per-box loop."""
import math
import statistics

import pytest
import torch
from torchvision.ops import box_iou

from detector.modeling.atss import ATSSMatcher
from detector.modeling.matching import SSDMatcher
from detector.modeling.ssdlite import build_model


def row(x1: float, x2: float) -> list[float]:
    """A box spanning ``x1..x2`` and ``y = 0..10``. Every box here shares that height, so an IoU is the
    1-D overlap of the x intervals over their union, and every centre is at y = 5, inside every box."""
    return [x1, 0.0, x2, 10.0]


# Two levels. Level 0: four 10-wide anchors; level 1: two 20-wide ones.
#   a0 [0, 10] c5   a1 [5, 15] c10   a2 [10, 20] c15   a3 [20, 30] c25   | a4 [0, 20] c10   a5 [10, 30] c20
ANCHORS = torch.tensor([row(0, 10), row(5, 15), row(10, 20), row(20, 30), row(0, 20), row(10, 30)])
LEVELS = torch.tensor([0, 0, 0, 0, 1, 1])
MATCHER = ATSSMatcher(topk=2)


def test_threshold_is_mean_plus_std_of_the_per_level_candidates():
    # gt [0, 10], centre x = 5.
    # Level 0 distances: a0 0, a1 5, a2 10, a3 20 -> candidates a0, a1 (top 2; a2, a3 are never looked at).
    # Level 1 distances: a4 5, a5 15 -> a4, a5.
    # IoUs: a0 10/10 = 1, a1 5/15 = 1/3, a4 10/20 = 1/2, a5 0/30 = 0.
    # mean = (1 + 1/3 + 1/2 + 0) / 4 = 11/24
    # std (n - 1) = sqrt(((13/24)^2 + (-3/24)^2 + (1/24)^2 + (-11/24)^2) / 3) = sqrt((300/576) / 3) = 5/12
    # threshold = 11/24 + 10/24 = 7/8: only a0 (IoU 1, centre 5 inside [0, 10]) is a positive;
    # a4 (1/2) and a1 (1/3) fall below it.
    ious = [1.0, 1 / 3, 1 / 2, 0.0]
    assert statistics.mean(ious) == pytest.approx(11 / 24)
    assert statistics.stdev(ious) == pytest.approx(5 / 12)
    matches = MATCHER(torch.tensor([row(0, 10)]), ANCHORS, LEVELS)
    assert matches.tolist() == [0, -1, -1, -1, -1, -1]
    # SSD's IoU >= 0.5 would also take a4.
    assert SSDMatcher(0.5)(torch.tensor([row(0, 10)]), ANCHORS).tolist() == [0, -1, -1, -1, 0, -1]


def test_an_anchor_claimed_by_two_boxes_goes_to_the_higher_iou():
    # Box 0 = [2, 30], centre 16.
    #   Level 0: a2 (distance 1), a1 (6); level 1: a5 (4), a4 (6).
    #   IoUs: a2 10/28 = 5/14, a1 10/28 = 5/14, a4 18/30 = 3/5, a5 20/28 = 5/7.
    #   mean = 0.50714, std = 0.17938, threshold 0.68652: a5 (5/7 = 0.714, centre 20 inside) only.
    # Box 1 = [10, 30], centre 20.
    #   Level 0: a2 (5) and a3 (5), a tie kept in anchor order; level 1: a5 (0), a4 (10).
    #   IoUs: a2 10/20 = 1/2, a3 10/20 = 1/2, a4 10/30 = 1/3, a5 20/20 = 1.
    #   mean = 7/12, std = sqrt((1 + 1 + 9 + 25) / 144 / 3) = sqrt(1/12) = 0.28868, threshold 0.87201:
    #   a5 only.
    # Both claim a5: box 1 overlaps it more (1 > 5/7), so a5 -> 1 and box 0 has no positive left.
    ious0 = [5 / 14, 5 / 14, 3 / 5, 5 / 7]
    assert statistics.mean(ious0) + statistics.stdev(ious0) == pytest.approx(0.68652, abs=1e-5)
    ious1 = [1 / 2, 1 / 2, 1 / 3, 1.0]
    assert statistics.mean(ious1) + statistics.stdev(ious1) == pytest.approx(7 / 12 + math.sqrt(1 / 12))
    gts = torch.tensor([row(2, 30), row(10, 30)])
    assert MATCHER(gts, ANCHORS, LEVELS).tolist() == [-1, -1, -1, -1, -1, 1]
    # The order of the boxes does not decide: the IoU does.
    assert MATCHER(gts.flip(0), ANCHORS, LEVELS).tolist() == [-1, -1, -1, -1, -1, 0]


def test_centre_rule_and_no_forced_match():
    # gt [0, 4], centre 2.
    #   Level 0: a0 (3), a1 (8); level 1: a4 (8), a5 (18).
    #   IoUs: a0 4/10 = 0.4, a1 0, a4 4/20 = 0.2, a5 0; mean 0.15, std sqrt(0.11 / 3) = 0.19149,
    #   threshold 0.34149: a0 passes the IoU test, but its centre (x = 5) is outside [0, 4].
    # No positive, and, unlike SSD's matcher, no forced match.
    ious = [0.4, 0.0, 0.2, 0.0]
    assert statistics.mean(ious) + statistics.stdev(ious) == pytest.approx(0.34149, abs=1e-5)
    gt = torch.tensor([row(0, 4)])
    assert MATCHER(gt, ANCHORS, LEVELS).tolist() == [-1] * 6
    assert SSDMatcher(0.5)(gt, ANCHORS).tolist() == [0, -1, -1, -1, -1, -1]
    # Widen the box to [0, 6]: a0's centre is inside, and (IoU 0.6 against a threshold of 0.513) it is kept.
    assert MATCHER(torch.tensor([row(0, 6)]), ANCHORS, LEVELS).tolist() == [0, -1, -1, -1, -1, -1]


def test_no_boxes_and_missing_levels():
    assert MATCHER(torch.zeros(0, 4), ANCHORS, LEVELS).tolist() == [-1] * 6
    with pytest.raises(ValueError, match="anchor_levels"):
        MATCHER(torch.tensor([row(0, 10)]), ANCHORS)
    with pytest.raises(ValueError, match="topk"):
        ATSSMatcher(topk=0)


def reference_atss(gt_boxes: torch.Tensor, anchors: torch.Tensor, levels: torch.Tensor, topk: int) -> list[int]:
    """The paper's Algorithm 1, one box and one level at a time, in plain Python."""
    centres = [((a[0] + a[2]) / 2, (a[1] + a[3]) / 2) for a in anchors.tolist()]
    overlaps = box_iou(gt_boxes, anchors).tolist()
    best: dict[int, tuple[float, int]] = {}
    for g, (x1, y1, x2, y2) in enumerate(gt_boxes.tolist()):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        candidates = []
        for level in sorted(set(levels.tolist())):
            members = [i for i in range(len(centres)) if levels[i] == level]
            members.sort(key=lambda i: ((centres[i][0] - cx) ** 2 + (centres[i][1] - cy) ** 2, i))
            candidates += members[:topk]
        values = [overlaps[g][i] for i in candidates]
        threshold = statistics.mean(values) + (statistics.stdev(values) if len(values) > 1 else 0.0)
        for i in candidates:
            ax, ay = centres[i]
            inside = min(ax - x1, ay - y1, x2 - ax, y2 - ay) > 0.01
            if overlaps[g][i] >= threshold and inside and (i not in best or overlaps[g][i] > best[i][0]):
                best[i] = (overlaps[g][i], g)
    return [best[i][1] if i in best else -1 for i in range(len(centres))]


@pytest.mark.parametrize("seed", range(3))
def test_equals_a_per_box_loop_on_real_anchors(seed):
    """On the default boxes of a small model (6 levels, 6 boxes sharing each centre), with random boxes."""
    model = build_model(num_classes=3, width_mult=0.35, image_size=96)
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(5, 2, generator=g) * 70
    wh = torch.rand(5, 2, generator=g) * 40 + 4
    gts = torch.cat((xy, xy + wh), dim=1).clamp(max=96)
    got = ATSSMatcher(topk=9)(gts, model.anchors, model.anchor_levels)
    expected = reference_atss(gts, model.anchors, model.anchor_levels, topk=9)
    assert got.tolist() == expected
    assert (got >= 0).sum() >= 5  # boxes of these sizes all find positives


def test_through_the_loss_of_a_built_model():
    model = build_model(num_classes=3, width_mult=0.35, image_size=96, assigner="atss", atss_topk=4)
    assert isinstance(model.criterion.matcher, ATSSMatcher) and model.criterion.matcher.topk == 4
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    out = model.compute_loss(torch.randn(2, 3, 96, 96), targets)
    assert torch.isfinite(out["loss"]) and out["num_positives"].item() > 0
