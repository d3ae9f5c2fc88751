"""detector.evaluation.anchor_coverage against hand-computed IoUs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detector.evaluation.anchor_coverage import (
    anchor_coverage,
    coverage_by_size,
    coverage_report,
    read_coco_boxes,
)


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


def test_read_coco_boxes_stretches_each_image_to_the_square(tmp_path: Path) -> None:
    coco = {"images": [{"id": 1, "width": 200, "height": 50}, {"id": 2, "width": 100, "height": 100}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [20, 10, 40, 20]},
                            {"id": 2, "image_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1},
                            {"id": 3, "image_id": 2, "bbox": [10, 20, 30, 40]}],
            "categories": [{"id": 1, "name": "a"}]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(coco))
    boxes = read_coco_boxes(path, image_size=100)  # x * 100 / 200, y * 100 / 50 for image 1; unchanged for 2
    torch.testing.assert_close(boxes, torch.tensor([[10.0, 20, 30, 60], [10, 20, 40, 60]]))
    # A non-square input (H, W) = (50, 400): x scales by 400 / width, y by 50 / height.
    boxes = read_coco_boxes(path, image_size=(50, 400))
    torch.testing.assert_close(boxes, torch.tensor([[40.0, 10, 120, 30], [40, 10, 160, 30]]))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="a.json"):
        read_coco_boxes(path, image_size=100)


def test_report_rows_and_the_all_row() -> None:
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 14, 14], [50, 50, 60, 60]])
    report = coverage_report(boxes, anchors, iou_threshold=0.5, image_size=100, edges=(0.0, 0.12, 1.0))
    assert [b.boxes for b in report.by_size] == [2, 1]  # sizes 0.1, 0.1 | 0.14
    assert report.total.boxes == 3 and report.total.uncovered == pytest.approx(1 / 3)
    assert report.total.mean_positives == pytest.approx(2 / 3)  # 1 + 1 + 0 anchors at IoU >= 0.5
    summary = report.to_dict()
    assert (summary["anchors"], summary["boxes"], summary["image_size"]) == (2, 3, 100)
    assert report.table()[-1].split()[:2] == ["all", "3"]
    # At (H, W) = (25, 400) sizes are relative to sqrt(25 * 400) = 100 as well: the same rows.
    wide = coverage_report(boxes, anchors, iou_threshold=0.5, image_size=(25, 400), edges=(0.0, 0.12, 1.0))
    assert [b.boxes for b in wide.by_size] == [2, 1] and wide.to_dict()["image_size"] == [25, 400]
