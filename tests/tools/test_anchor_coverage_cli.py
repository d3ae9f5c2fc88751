"""tools/anchor_coverage.py: a box placed exactly on one of the config's anchors is covered at IoU 1."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.modeling.ssdlite import build_model

ROOT = Path(__file__).resolve().parents[2]


def test_box_on_an_anchor_is_covered(tmp_path: Path) -> None:
    config = ROOT / "configs" / "quickstart.yaml"
    side = 128
    model = build_model(num_classes=2, width_mult=0.5, image_size=side, reduce_boxes_in_lowest_layer=False,
                        iou_threshold=0.3)
    x0, y0, x1, y1 = model.anchors[model.anchors.shape[0] - 1].tolist()  # the last, largest anchor
    # The image is 256 px wide: the tool halves x to reach the 128 px input, as the training resize does.
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 2 * side, "height": side}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "bbox": [2 * x0, y0, 2 * (x1 - x0), y1 - y0]},
                            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 5, 5]}],
            "categories": [{"id": 1, "name": "a"}]}
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps(coco))
    out = tmp_path / "coverage.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "anchor_coverage.py"), "--annotations",
                           str(annotations), "--config", str(config), "--image-size", str(side), "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["boxes"] == 1  # the crowd box is left out
    assert report["anchors"] == model.anchors.shape[0] and report["iou_threshold"] == pytest.approx(0.3)
    assert report["no_positive"] == 0.0 and report["positives_per_box"] >= 1
    (row,) = [b for b in report["by_size"] if b["boxes"]]
    assert row["median_best_iou"] == pytest.approx(1.0, abs=1e-5)


def test_unreadable_annotations_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "anchor_coverage.py"), "--annotations", str(bad),
                           "--config", str(ROOT / "configs" / "quickstart.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and str(bad) in proc.stderr
