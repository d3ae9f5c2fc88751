"""tools/eval.py: the official COCO reference to 1e-9 with both backends, errors, and the checkpoint mode."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.evaluation.coco import COCO_STATS_KEYS

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "eval.py"
REFERENCE = ROOT / ".." / "shared" / "data" / "coco-eval-reference"
REF_GT = REFERENCE / "faster_coco_eval" / "cocoapi" / "instances_val2014_100.json"
REF_DT = REFERENCE / "cocoapi_results" / "instances_val2014_fakebbox100_results.json"
# Official values (cocoapi's val2014_fake_eval_res.txt, full precision from faster_coco_eval's test).
REFERENCE_STATS = [
    0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443,
    0.5193996948036719, 0.5013978986347466, 0.38681277964578054, 0.5936795762842003,
    0.595352982877607, 0.6398109626113442, 0.5664205978994309, 0.5642905982905982,
]


def load_tool():
    spec = importlib.util.spec_from_file_location("tools_eval", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", ["pycocotools", "faster-coco-eval"])
def test_reference_metrics_to_1e9(backend, tmp_path):
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} is absent")
    out = tmp_path / "metrics.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--detections", str(REF_DT), "--annotations", str(REF_GT),
         "--output", str(out), "--backend", backend],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    assert list(metrics) == [*COCO_STATS_KEYS, "per_class", "num_images", "num_detections"]
    for key, expected in zip(COCO_STATS_KEYS, REFERENCE_STATS):
        assert abs(metrics[key] - expected) <= 1e-9, (key, metrics[key], expected)
    assert metrics["num_images"] == 100 and metrics["num_detections"] == 734
    assert metrics["per_class"]["person"]["gt"] > 0
    # The printed summary is pycocotools' text; the per-class table follows it.
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.505" in proc.stdout
    assert "person" in proc.stdout and str(out) in proc.stdout


def write_gt(path: Path, images: int = 4) -> dict:
    gt = {
        "images": [{"id": i, "file_name": f"img{i}.jpg", "width": 160, "height": 120} for i in range(1, images + 1)],
        "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "boat"}],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 3 if i % 2 else 7, "bbox": [20, 10, 60, 50], "area": 3000, "iscrowd": 0}
            for i in range(1, images + 1)
        ],
    }
    path.write_text(json.dumps(gt))
    return gt


def write_images_and_model(tmp_path: Path, count: int, seed: int, **model_options) -> Path:
    """``gt.json`` with ``count`` random 160x120 images in ``images/``, and an untrained ``model.pt``
    for its two categories; returns the images folder."""
    import torch

    from detector.checkpoint import save_checkpoint
    from detector.labels import LabelMap
    from detector.modeling.ssdlite import build_model

    gt = write_gt(tmp_path / "gt.json", images=count)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(seed)
    for img in gt["images"]:
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(images / img["file_name"])
    torch.manual_seed(0)
    label_map = LabelMap.from_categories(gt["categories"])
    model = build_model("ssdlite_mobilenetv2", num_classes=label_map.num_classes, **model_options)
    save_checkpoint(tmp_path / "model.pt", model, label_map)
    return images


def test_unknown_image_id_is_a_clear_error(tmp_path, capsys):
    write_gt(tmp_path / "gt.json")
    (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 4242, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    code = load_tool().main(["--detections", str(tmp_path / "dets.json"), "--annotations", str(tmp_path / "gt.json"),
                             "--output", str(tmp_path / "m.json")])
    assert code == 2
    assert "4242" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_detections_mode_with_plots_and_gallery(tmp_path):
    write_gt(tmp_path / "gt.json")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(1, 5):
        Image.new("RGB", (160, 120), (i * 40, 80, 120)).save(images / f"img{i}.jpg")
    dets = [{"image_id": i, "category_id": 3 if i % 2 else 7, "bbox": [22, 12, 58, 47], "score": 0.1 * i} for i in range(1, 4)]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    code = load_tool().main(["--detections", str(tmp_path / "dets.json"), "--annotations", str(tmp_path / "gt.json"),
                             "--output", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots"),
                             "--images", str(images)])
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["gallery_best.png", "gallery_worst.png", "pr_all.png", "pr_per_class"]
    assert len(list((tmp_path / "plots" / "pr_per_class").glob("*.png"))) == 2


def test_checkpoint_mode_writes_detections_that_reevaluate_identically(tmp_path):
    images = write_images_and_model(tmp_path, 5, seed=0, width_mult=0.5, image_size=128)

    tool = load_tool()
    out = tmp_path / "out" / "metrics.json"
    code = tool.main(["--checkpoint", str(tmp_path / "model.pt"), "--images", str(images), "--annotations",
                      str(tmp_path / "gt.json"), "--output", str(out), "--batch-size", "2", "--num-workers", "0",
                      "--device", "cpu", "--score-threshold", "0.001", "--max-detections", "20",
                      "--plots", str(tmp_path / "plots")])
    assert code == 0
    metrics = json.loads(out.read_text())
    dets = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert metrics["num_images"] == 5 and metrics["num_detections"] == len(dets) > 0
    assert {d["category_id"] for d in dets} <= {3, 7}  # the user's ids, not contiguous labels
    per_image = np.bincount([d["image_id"] for d in dets])
    assert per_image.max() <= 20
    assert all(len(d["bbox"]) == 4 and d["bbox"][2] >= 0 and d["bbox"][3] >= 0 for d in dets)
    assert (tmp_path / "plots" / "gallery_worst.png").is_file()

    again = tmp_path / "again.json"
    assert tool.main(["--detections", str(tmp_path / "out" / "detections.json"), "--annotations",
                      str(tmp_path / "gt.json"), "--output", str(again)]) == 0
    assert json.loads(again.read_text()) == metrics



def test_pickle_payload_checkpoint_is_refused_without_running_it(tmp_path, capsys, code_payload):
    import torch

    write_gt(tmp_path / "gt.json")
    (tmp_path / "images").mkdir()
    marker = code_payload.marker
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "detector": {"config": code_payload}}, evil)
    torch.load(evil, weights_only=False)  # the payload is live: unpickled unsafely, it runs
    assert marker.is_file()
    marker.unlink()
    code = load_tool().main(["--checkpoint", str(evil), "--images", str(tmp_path / "images"), "--annotations",
                             str(tmp_path / "gt.json"), "--output", str(tmp_path / "m.json"), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "evil.ckpt" in err and "weights_only=True" in err
    assert not marker.exists() and not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("content, expected", [
    (b'[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 5', "not valid JSON"),  # truncated
    (b'{"annotations": []}', "not a COCO results list"),
    (b'[{"image_id": 1, "category_id": 3, "score": 0.5}]', r"entries 0 are not COCO box results"),
    (b'[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3], "score": 0.5}, 7]', r"entries 0, 1 are not"),
    (b'[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": NaN}]', r"entries 0 are not"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5, "x": "é"}]'.encode("latin-1"),
     "not valid JSON"),  # not UTF-8
])
def test_broken_detections_json_is_a_clear_error_naming_the_file(tmp_path, capsys, content, expected):
    write_gt(tmp_path / "gt.json")
    (tmp_path / "broken_dets.json").write_bytes(content)
    code = load_tool().main(["--detections", str(tmp_path / "broken_dets.json"), "--annotations",
                             str(tmp_path / "gt.json"), "--output", str(tmp_path / "m.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "broken_dets.json" in err
    assert re.search(expected, err), err
    assert not (tmp_path / "m.json").exists()


def test_slice_and_letterbox_run_through_the_predictor(tmp_path):
    """Images already at the network's aspect (160x120 for a 96x128 input): letterboxing pads nothing and
    slicing has no tile, so both score exactly what the plain path scores; real tiles change the detections,
    merged to the model's cap per image."""
    images = write_images_and_model(tmp_path, 3, seed=1, width_mult=0.35, image_size=(96, 128))
    tool = load_tool()
    common = ["--checkpoint", str(tmp_path / "model.pt"), "--images", str(images), "--annotations",
              str(tmp_path / "gt.json"), "--num-workers", "0", "--device", "cpu", "--score-threshold", "0.3"]
    metrics = {}
    for name, extra in (("plain", []), ("letterbox", ["--letterbox"]), ("slice", ["--slice"]),
                        ("tiles", ["--slice-size", "60x80"])):
        assert tool.main([*common, *extra, "--output", str(tmp_path / name / "metrics.json")]) == 0
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert metrics["plain"]["num_detections"] > 0
    assert metrics["letterbox"] == metrics["plain"] and metrics["slice"] == metrics["plain"]
    tiles = json.loads((tmp_path / "tiles" / "detections.json").read_text())
    plain = json.loads((tmp_path / "plain" / "detections.json").read_text())
    assert tiles != plain and np.bincount([d["image_id"] for d in tiles]).max() <= 100  # merged, capped per image


def test_the_models_recorded_view_is_the_default_and_no_slice_turns_it_off(tmp_path, capsys):
    """A model that records "slice frames at least 1:1 into 60x80 tiles" (issue #38) is scored sliced with no
    flag, exactly as --slice-size 60x80 scores the same weights; --no-slice scores them whole."""
    from detector.slicing import FrameView, Slicing

    view = FrameView(slicing=Slicing(tile=(60, 80)), slice_min_aspect=1.0).to_config()
    images = write_images_and_model(tmp_path, 3, seed=1, width_mult=0.35, image_size=(96, 128), view=view)
    tool = load_tool()
    common = ["--checkpoint", str(tmp_path / "model.pt"), "--images", str(images), "--annotations",
              str(tmp_path / "gt.json"), "--num-workers", "0", "--device", "cpu", "--score-threshold", "0.3"]
    detections = {}
    for name, extra in (("default", []), ("explicit", ["--slice-size", "60x80"]), ("whole", ["--no-slice"])):
        assert tool.main([*common, *extra, "--output", str(tmp_path / name / "metrics.json")]) == 0
        detections[name] = json.loads((tmp_path / name / "detections.json").read_text())
    assert "view: sliced (60x80 tiles" in capsys.readouterr().err
    assert detections["default"] == detections["explicit"] and detections["whole"] != detections["default"]


def test_class_map_scores_merged_classes_on_a_file_of_other_names(tmp_path, capsys):
    """Issue #34: a model of cars and boats scored on a file that calls both "vehicle": --class-map merges
    them; without it nothing is shared and the tool says so in one line."""
    images = write_images_and_model(tmp_path, count=4, seed=3, width_mult=0.35, image_size=96)
    gt = json.loads((tmp_path / "gt.json").read_text())
    gt["categories"] = [{"id": 1, "name": "vehicle"}]
    for ann in gt["annotations"]:
        ann["category_id"] = 1
    (tmp_path / "vehicles.json").write_text(json.dumps(gt))
    tool = load_tool()
    common = ["--checkpoint", str(tmp_path / "model.pt"), "--images", str(images), "--annotations",
              str(tmp_path / "vehicles.json"), "--num-workers", "0", "--output", str(tmp_path / "m.json")]
    assert tool.main(common) == 2
    assert "none of the model's classes ['car', 'boat']" in capsys.readouterr().err
    assert tool.main([*common, "--class-map", "car,boat=vehicle"]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert list(metrics["per_class"]) == ["vehicle"] and metrics["per_class"]["vehicle"]["gt"] == 4
    results = json.loads((tmp_path / "detections.json").read_text())
    assert results and {r["category_id"] for r in results} == {1}


def test_metric_kitti_scores_a_converted_kitti_set(tmp_path, capsys):
    """--metric kitti on a set converted with --from kitti: KITTI's table and kitti/* keys (issue #34)."""
    import importlib.util as iu

    from detector.data.converters import kitti_to_coco, write_coco

    (tmp_path / "image_2").mkdir()
    (tmp_path / "label_2").mkdir()
    for i in range(41):  # 41 cars: the devkit's 41 recall samples all reached
        Image.new("RGB", (200, 100)).save(tmp_path / "image_2" / f"{i:06d}.png")
        (tmp_path / "label_2" / f"{i:06d}.txt").write_text(
            "Car 0.00 0 -1.5 20.00 10.00 120.00 70.00 1.5 1.6 3.9 1.0 1.7 20.0 -1.6\n"
            "DontCare -1 -1 -10 150.00 5.00 190.00 40.00 -1 -1 -1 -1000 -1000 -1000 -10\n")
    coco, _ = kitti_to_coco(tmp_path / "image_2", tmp_path / "label_2")
    write_coco(coco, tmp_path / "kitti.json")
    car = next(c["id"] for c in coco["categories"] if c["name"] == "Car")
    detections = [{"image_id": image["id"], "category_id": car, "bbox": [20, 10, 100, 60], "score": 0.5 + image["id"] / 100}
                  for image in coco["images"]]
    # A false positive in a DontCare region: no false positive for KITTI.
    detections += [{"image_id": 1, "category_id": car, "bbox": [152, 6, 30, 30], "score": 0.99}]
    (tmp_path / "dets.json").write_text(json.dumps(detections))
    assert load_tool().main(["--detections", str(tmp_path / "dets.json"), "--annotations", str(tmp_path / "kitti.json"),
                             "--metric", "kitti", "--output", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["kitti/Car/easy"] == pytest.approx(1.0) and metrics["kitti/Car/hard"] == pytest.approx(1.0)
    assert metrics["kitti/Pedestrian/moderate"] == 0.0 and metrics["kitti/recall_points"] == 40
    assert "KITTI 2D AP|R40" in capsys.readouterr().out
