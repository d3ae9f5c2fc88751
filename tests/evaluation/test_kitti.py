"""KITTI's 2D metric equals the devkit's own C++ on the same boxes (issue #34).

``kitti_devkit_reference.json`` holds the devkit's 41-point precision curves (tools/kitti_devkit_reference.py)
for seeded detections made from the kitti-dev labels; the test makes the same detections, converts the
labels with ``--from kitti`` and scores them with detector.evaluation.kitti. Dropping any one of KITTI's
rules (DontCare regions, the Van / Person_sitting neighbours, IoU 0.7 for cars, the height bound on
detections) moves the numbers away from the devkit's, and the test says so."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import detector.evaluation.kitti as kitti
from detector.data.converters import kitti_to_coco
from detector.evaluation.kitti import KittiBox, frames_from_coco, kitti_metrics

ROOT = Path(__file__).resolve().parents[2]
KITTI = ROOT.parent / "shared" / "data" / "kitti-dev"
REFERENCE = json.loads(Path(__file__).with_name("kitti_devkit_reference.json").read_text())


def load_tool():
    spec = importlib.util.spec_from_file_location("tools_kitti_reference", ROOT / "tools" / "kitti_devkit_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ground_truth() -> tuple[list[str], list[list[KittiBox]]]:
    if not KITTI.is_dir():
        pytest.skip(f"{KITTI} is absent")
    coco, _ = kitti_to_coco(KITTI / "image_2", KITTI / "label_2")
    stems = [Path(image["file_name"]).stem for image in coco["images"]]
    gt, _ = frames_from_coco(coco, [])
    return stems, gt


def curves_for(seed: int, stems: list[str], gt: list[list[KittiBox]]) -> dict:
    frames = load_tool().seeded_detections(KITTI / "label_2", seed)
    det = [[KittiBox(k, (a, b, c, d), score=s) for k, a, b, c, d, s in frames[stem]] for stem in stems]
    return kitti_metrics(gt, det)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_the_devkit_to_4_decimals(seed: int, ground_truth) -> None:
    metrics = curves_for(seed, *ground_truth)
    reference = REFERENCE["seeds"][str(seed)]
    for cls, by_difficulty in reference.items():
        for difficulty, curve in by_difficulty.items():
            np.testing.assert_allclose(metrics["kitti/precision"][cls][difficulty], curve, atol=1e-4,
                                       err_msg=f"{cls} {difficulty}")
            assert metrics[f"kitti/{cls}/{difficulty}"] == pytest.approx(sum(curve[1:]) / 40, abs=1e-4)
    assert 0.1 < metrics["kitti/Car/moderate"] < 0.9  # a real measurement, not an empty one


@pytest.mark.parametrize("dropped", ["dont_care", "neighbours", "car_iou_0.5", "detection_height"])
def test_dropping_a_rule_moves_away_from_the_devkit(dropped: str, ground_truth, monkeypatch) -> None:
    if dropped == "dont_care":
        monkeypatch.setattr(kitti, "DONT_CARE", "no such type")
    elif dropped == "neighbours":
        monkeypatch.setattr(kitti, "NEIGHBOURS", {})
    elif dropped == "car_iou_0.5":
        monkeypatch.setattr(kitti, "MIN_OVERLAP", {**kitti.MIN_OVERLAP, "Car": 0.5})
    else:
        original = kitti._prepare

        def without_height_rule(gt, det, cls, difficulty):
            frame, counted = original(gt, det, cls, difficulty)
            frame.det_state = np.array([0 if d.kind.lower() == cls.lower() else -1 for d in det], dtype=np.int64)
            return frame, counted

        monkeypatch.setattr(kitti, "_prepare", without_height_rule)
    metrics = curves_for(0, *ground_truth)
    reference = REFERENCE["seeds"]["0"]
    worst = max(np.abs(np.array(metrics["kitti/precision"][c][d]) - np.array(reference[c][d])).max()
                for c in reference for d in reference[c])
    assert worst > 1e-3, f"dropping {dropped} left every curve within 1e-3 of the devkit's"


def test_eleven_point_ap_and_the_table() -> None:
    one = KittiBox("Car", (0.0, 0.0, 100.0, 60.0))
    # 41 cars, each found: precision 1 at every one of the 41 recall points, so AP|R11 = AP|R40 = 1.
    found = [[KittiBox("Car", one.box, score=(i + 1) / 100)] for i in range(41)]
    for points in (11, 40):
        metrics = kitti_metrics([[one]] * 41, found, recall_points=points)
        assert metrics["kitti/Car/easy"] == pytest.approx(1.0) and metrics["kitti/Pedestrian/easy"] == 0.0
    # One car found: the devkit samples recall in steps of 1/40 from 0, so only the first point is reached.
    single = kitti_metrics([[one]], [found[0]], recall_points=11)
    assert single["kitti/Car/easy"] == pytest.approx(1 / 11)
    assert kitti_metrics([[one]], [found[0]])["kitti/Car/easy"] == 0.0
    table = kitti.format_kitti_table(metrics)  # the last one computed: AP|R40
    assert "AP|R40" in table and "Car" in table and "100.00" in table
    with pytest.raises(ValueError, match="40 or 11"):
        kitti_metrics([[one]], [[one]], recall_points=20)
