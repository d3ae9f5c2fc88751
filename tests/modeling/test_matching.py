"""SSDMatcher: IoU >= threshold, then each ground truth forced onto its best anchor."""
import pytest
import torch
from torchvision.models.detection._utils import SSDMatcher as TVSSDMatcher
from torchvision.ops import box_iou

import detector.modeling.matching
from detector.modeling.matching import SSDMatcher


def test_docstring_iou_matrix(monkeypatch):
    iou = torch.tensor([[0.6, 0.2, 0.1], [0.1, 0.3, 0.4]])
    monkeypatch.setattr(detector.modeling.matching, "box_iou", lambda gt, anchors: iou)
    matches = SSDMatcher(0.5)(torch.zeros(2, 4), torch.zeros(3, 4))
    assert matches.tolist() == [0, -1, 1]
    assert matches.dtype == torch.int64


def test_hand_built_boxes():
    anchors = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0], [30.0, 0.0, 40.0, 10.0], [20.0, 20.0, 30.0, 30.0]]
    )
    gt = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # anchor 0, IoU 1
            [12.0, 0.0, 22.0, 10.0],  # anchor 1, IoU 80 / 120 = 0.67
            [20.0, 20.0, 40.0, 40.0],  # anchor 3, IoU 100 / 400 = 0.25: forced
        ]
    )
    assert SSDMatcher(0.5)(gt, anchors).tolist() == [0, 1, -1, 2]
    # At a threshold above 0.67 only forced matches remain (and every box keeps its best anchor).
    assert SSDMatcher(0.7)(gt, anchors).tolist() == [0, 1, -1, 2]
    assert SSDMatcher(0.7)(gt[1:], anchors).tolist() == [-1, 0, -1, 1]


def test_threshold_is_inclusive():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 30.0, 10.0]])
    gt = torch.tensor([[0.0, 0.0, 20.0, 10.0]])  # IoU 0.5 with both; anchor 0 is its best (first)
    assert SSDMatcher(0.5)(gt, anchors).tolist() == [0, 0]


def test_no_ground_truth():
    matches = SSDMatcher(0.5)(torch.zeros(0, 4), torch.rand(7, 4))
    assert matches.tolist() == [-1] * 7
    assert matches.dtype == torch.int64


def _random_boxes(n, g, size=100.0):
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 2.0
    return torch.cat((xy, xy + wh), 1)


@pytest.mark.parametrize("seed", range(5))
def test_equals_torchvision(seed):
    g = torch.Generator().manual_seed(seed)
    anchors = _random_boxes(300, g)
    gt = _random_boxes(int(torch.randint(1, 12, (1,), generator=g)), g)
    expected = TVSSDMatcher(0.5)(box_iou(gt, anchors))
    matches = SSDMatcher(0.5)(gt, anchors)
    assert torch.equal(matches, expected)
    assert (matches >= 0).any() and (matches == -1).any()
    # Each ground truth's best anchor is positive (the last box wins when two share one).
    best = box_iou(gt, anchors).argmax(dim=1)
    assert (matches[best] >= 0).all()
    assert matches[best[-1]] == len(gt) - 1
