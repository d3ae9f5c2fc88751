"""detector.evaluation.anchor_coverage against hand-computed IoUs."""
from __future__ import annotations

import torch

from detector.evaluation.anchor_coverage import anchor_coverage, coverage_by_size


def test_best_iou_and_positives_by_hand() -> None:
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20]])
    boxes = torch.tensor([[0.0, 0, 14, 14],    # IoUs 100/196 = 0.510, 196/400 = 0.49
                          [0, 0, 20, 20],      # IoUs 0.25, 1.0
                          [50, 50, 60, 60]])   # overlaps nothing
    best, positives = anchor_coverage(boxes, anchors, iou_threshold=0.5)
    torch.testing.assert_close(best, torch.tensor([100 / 196, 1.0, 0.0]))
    assert positives.tolist() == [1, 1, 0]
    _, positives = anchor_coverage(boxes, anchors, iou_threshold=0.2)
    assert positives.tolist() == [2, 2, 0]


def test_no_boxes() -> None:
    best, positives = anchor_coverage(torch.zeros(0, 4), torch.tensor([[0.0, 0, 1, 1]]), 0.5)
    assert best.shape == (0,) and positives.shape == (0,)


def test_bins_by_relative_size_include_the_whole_image_box() -> None:
    side = 100.0
    boxes = torch.tensor([[0.0, 0, 10, 10],     # relative size 0.1
                          [0, 0, 20, 5],        # sqrt(100) / 100 = 0.1
                          [0, 0, 100, 100]])    # 1.0: the last bin includes its upper edge
    best = torch.tensor([0.4, 0.6, 0.9])
    positives = torch.tensor([0, 3, 5])
    empty, low, high = coverage_by_size(boxes, side, best, positives, (0.0, 0.1, 0.5, 1.0))
    assert (empty.boxes, low.boxes, high.boxes) == (0, 2, 1)
    assert low.uncovered == 0.5 and low.mean_positives == 1.5
    torch.testing.assert_close(torch.tensor(low.median_best_iou), torch.tensor(0.4))  # lower middle of two
    assert high.uncovered == 0.0 and high.mean_positives == 5.0
