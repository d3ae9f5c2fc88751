"""benchmarks/yolo_reference.py's COCO <-> YOLO conversions (pure functions, no Ultralytics needed) and the
YOLO11n plumbing of benchmarks/training_budget.py (arguments, commands, result rows) without running it."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


yolo = _load("yolo_reference", ROOT / "benchmarks" / "yolo_reference.py")

# Non-contiguous ids, listed out of order: YOLO classes follow ascending COCO id.
CATEGORIES = [{"id": 7, "name": "car"}, {"id": 3, "name": "person"}, {"id": 12, "name": "sign"}]


def _coco() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
                   {"id": 2, "file_name": "sub/b.jpg", "width": 200, "height": 100},  # no boxes
                   {"id": 5, "file_name": "c.jpg", "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [20, 10, 40, 30], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 12, "bbox": [0, 0, 200, 100], "iscrowd": 0},
            {"id": 3, "image_id": 5, "category_id": 7, "bbox": [10, 10, 50, 50], "iscrowd": 1},  # crowd: skipped
            {"id": 4, "image_id": 5, "category_id": 7, "bbox": [50, 60, 20, 10]},  # no iscrowd key: an object
        ],
        "categories": CATEGORIES,
    }


def test_label_line_by_hand() -> None:
    # 200x100 image, box x=20 y=10 w=40 h=30: centre (40, 25) -> (0.2, 0.25); size (0.2, 0.3).
    assert yolo.yolo_label_line([20, 10, 40, 30], 200, 100, 0) == "0 0.2 0.25 0.2 0.3"
    assert yolo.yolo_line_to_coco("0 0.2 0.25 0.2 0.3", 200, 100) == (0, pytest.approx([20, 10, 40, 30]))


def test_label_line_clips_to_the_image() -> None:
    # Ultralytics drops every label of an image with a coordinate outside [0, 1]: clip instead.
    assert yolo.yolo_label_line([-10, 90, 40, 30], 200, 100, 2) == "2 0.075 0.95 0.15 0.1"  # x 0..30, y 90..100
    assert yolo.yolo_label_line([210, 10, 40, 30], 200, 100, 0) is None  # wholly outside
    assert yolo.yolo_label_line([20, 10, 0, 30], 200, 100, 0) is None  # empty


def test_coco_to_yolo_labels() -> None:
    labels = yolo.coco_to_yolo_labels(_coco())
    assert set(labels) == {1, 2, 5}  # every image, with boxes or not
    # person (id 3) is class 0, car (id 7) class 1, sign (id 12) class 2
    assert labels[1] == ["0 0.2 0.25 0.2 0.3", "2 0.5 0.5 1 1"]
    assert labels[2] == []
    assert labels[5] == ["1 0.6 0.65 0.2 0.1"]  # the crowd box is left out


def test_category_mapping_non_contiguous() -> None:
    assert yolo.category_ids(CATEGORIES) == [3, 7, 12]
    assert yolo.category_names(CATEGORIES) == ["person", "car", "sign"]
    with pytest.raises(ValueError):
        yolo.category_ids(CATEGORIES + [{"id": 3, "name": "again"}])


def test_missing_image_size_is_an_error() -> None:
    coco = _coco()
    del coco["images"][0]["width"]
    with pytest.raises(ValueError, match="width"):
        yolo.coco_to_yolo_labels(coco)


def test_yolo_to_coco_results_by_hand() -> None:
    results = yolo.yolo_to_coco_results(5, [[20.0, 10.0, 60.0, 40.0], [0.5, 1.25, 3.0, 4.0]], [0.9, 0.0125],
                                        [0, 2], [3, 7, 12])
    assert results == [
        {"image_id": 5, "category_id": 3, "bbox": [20.0, 10.0, 40.0, 30.0], "score": 0.9},
        {"image_id": 5, "category_id": 12, "bbox": [0.5, 1.25, 2.5, 2.75], "score": 0.0125},
    ]
    assert yolo.yolo_to_coco_results(1, [], [], [], [3, 7, 12]) == []


def test_round_trip() -> None:
    """COCO box -> label line -> the box a perfect model would predict -> COCO result: same box and id."""
    coco = _coco()
    ids = yolo.category_ids(coco["categories"])
    images = {im["id"]: im for im in coco["images"]}
    for image_id, lines in yolo.coco_to_yolo_labels(coco).items():
        im = images[image_id]
        expected = [(a["category_id"], a["bbox"]) for a in coco["annotations"]
                    if a["image_id"] == image_id and not a.get("iscrowd", 0)]
        boxes = [yolo.yolo_line_to_coco(line, im["width"], im["height"]) for line in lines]
        xyxy = [[x, y, x + w, y + h] for _, (x, y, w, h) in boxes]
        results = yolo.yolo_to_coco_results(image_id, xyxy, [1.0] * len(boxes), [c for c, _ in boxes], ids)
        assert [r["category_id"] for r in results] == [c for c, _ in expected]
        for result, (_, bbox) in zip(results, expected):
            assert result["bbox"] == pytest.approx(bbox, abs=1e-3)


def test_label_file_name_is_flat() -> None:
    assert yolo.label_file_name("train/Town02_003720.png") == "train__Town02_003720.png"
    assert yolo.label_file_name("000001.jpg") == "000001.jpg"


def test_training_epochs() -> None:
    assert yolo.training_epochs(744 * 16, 1000) == 12  # 11.904 epochs: 12, the last one cut short
    assert yolo.training_epochs(16, 1000) == 1
    assert yolo.training_epochs(2000, 1000) == 2


def test_train_overrides() -> None:
    default = yolo.train_overrides("default", Path("/d/data.yaml"), 12, 256, 16, 0, Path("/out"))
    assert default["imgsz"] == 256 and default["batch"] == 16 and default["epochs"] == 12
    assert default["device"] == "cpu" and default["pretrained"] is False and default["amp"] is False
    assert default["plots"] is False and default["val"] is False
    assert "nbs" not in default and "warmup_epochs" not in default  # Ultralytics' own: 64 and 3
    adapted = yolo.train_overrides("adapted", Path("/d/data.yaml"), 12, 256, 16, 0, Path("/out"))
    assert adapted == {**default, "warmup_epochs": 1.0, "nbs": 16}
    with pytest.raises(ValueError):
        yolo.train_overrides("tuned", Path("/d/data.yaml"), 12, 256, 16, 0, Path("/out"))


def test_write_dataset(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.jpg", "c.jpg"):
        (images / name).write_bytes(b"jpeg")
    annotations = tmp_path / "coco.json"
    annotations.write_text(json.dumps(_coco()))
    args = yolo.parse_args(["--train-images", str(images), "--train-annotations", str(annotations),
                            "--val-images", str(images), "--val-annotations", str(annotations),
                            "--steps", "2", "--batch-size", "2", "--image-size", "64", "--output-dir", str(tmp_path)])
    data_yaml, _, val_names = yolo.write_dataset(args, tmp_path / "dataset")
    data = json.loads(data_yaml.read_text())  # JSON is YAML
    assert data["names"] == ["person", "car", "sign"] and data["train"] == "images/train"
    assert val_names == {"a.jpg": 1, "sub__b.jpg": 2, "c.jpg": 5}
    root = tmp_path / "dataset"
    assert (root / "images" / "val" / "sub__b.jpg").resolve() == (images / "sub" / "b.jpg").resolve()
    assert (root / "labels" / "train" / "a.txt").read_text() == "0 0.2 0.25 0.2 0.3\n2 0.5 0.5 1 1\n"
    assert (root / "labels" / "train" / "sub__b.txt").read_text() == ""  # a background image
    yolo.write_dataset(args, tmp_path / "dataset")  # rebuilt from scratch, no clash with the old links


def test_no_ultralytics_at_import() -> None:
    # The tests above run in the project's environment: loading the module must not import Ultralytics.
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('y', sys.argv[1]); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
            "sys.exit('ultralytics' in sys.modules or 'torch' in sys.modules)")
    script = ROOT / "benchmarks" / "yolo_reference.py"
    assert subprocess.run([sys.executable, "-c", code, str(script)], check=False).returncode == 0


# ----------------------------------------------------------------------------------------------------
# benchmarks/training_budget.py (imports torch and Lightning, as its own tests do)


@pytest.fixture(scope="module")
def budget() -> ModuleType:
    return _load("benchmark_training_yolo", ROOT / "benchmarks" / "training_budget.py")


def test_yolo_arguments(budget: ModuleType) -> None:
    args = budget.parse_args([])
    assert args.yolo_python is None and args.yolo_settings is None  # unchanged without --yolo-python
    args = budget.parse_args(["--yolo-python", ".venv-yolo/bin/python"])
    assert args.yolo_settings == ["default", "adapted"]
    # Absolute, not resolved: resolving a venv's python link would leave the venv.
    assert args.yolo_python == Path.cwd() / ".venv-yolo" / "bin" / "python"
    args = budget.parse_args(["--yolo-python", "py", "--yolo-settings", "adapted", "--yolo-settings", "adapted"])
    assert args.yolo_settings == ["adapted"]
    with pytest.raises(SystemExit):
        budget.parse_args(["--yolo-settings", "default"])  # needs --yolo-python
    with pytest.raises(SystemExit):
        budget.parse_args(["--yolo-python", "py", "--yolo-settings", "tuned"])


def test_yolo_commands(budget: ModuleType, tmp_path: Path) -> None:
    args = budget.parse_args(["--yolo-python", "/envs/yolo/bin/python", "--steps", "744", "--batch-size", "16",
                              "--threads", "2", "--train-images", "/d/train", "--train-annotations", "/d/train.json",
                              "--val-images", "/d/val", "--val-annotations", "/d/val.json"])
    command = budget.yolo_command(args, "adapted", tmp_path / "yolo11n_adapted", 256, 0)
    assert command[:2] == ["/envs/yolo/bin/python", str(ROOT / "benchmarks" / "yolo_reference.py")]
    options = dict(zip(command[2::2], command[3::2]))
    assert options == {
        "--train-images": "/d/train", "--train-annotations": "/d/train.json", "--val-images": "/d/val",
        "--val-annotations": "/d/val.json", "--steps": "744", "--batch-size": "16", "--image-size": "256",
        "--settings": "adapted", "--seed": "0", "--threads": "2", "--output-dir": str(tmp_path / "yolo11n_adapted"),
        "--detections-out": str(tmp_path / "yolo11n_adapted" / "detections.json"),
    }
    # The command parses as yolo_reference.py's own arguments.
    parsed = yolo.parse_args(command[2:])
    assert parsed.settings == "adapted" and parsed.steps == 744 and parsed.image_size == 256
    scoring = budget.eval_command(Path("/r/dets.json"), Path("/d/val.json"), Path("/r/metrics.json"))
    assert scoring == [sys.executable, str(ROOT / "tools" / "eval.py"), "--detections", "/r/dets.json",
                       "--annotations", "/d/val.json", "--output", "/r/metrics.json"]
    assert budget.yolo_image_size(256) == 256
    assert budget.yolo_image_size([224, 384]) == 384  # Ultralytics trains square: the long side


def test_yolo_entry(budget: ModuleType, tmp_path: Path) -> None:
    summary = {
        "settings": "default", "ultralytics": "8.4.190", "image_size": 256, "params": 2590815, "gflops": 1.1,
        "gmacs": 0.55, "epochs": 1, "batches_per_epoch": 250, "requested_steps": 3, "steps": 3, "images_seen": 12,
        "target_images": 12, "optimizer_steps": 0, "train_args": {"nbs": 64}, "effective": {"accumulate": 16},
        "predict": {"conf": 0.001}, "step_stamps": [1.0, 2.0, 4.0], "step_images": [4, 4, 4], "train_s": 4.5,
        "final_loss": 12.5, "weights": "/r/last.pt", "detections": "/r/dets.json", "torch": "2.14.1",
    }
    metrics = {"AP": 0.1, "AP50": 0.2, "AP75": 0.05, "APs": 0.0, "APm": 0.1, "APl": 0.2, "num_images": 4,
               "num_detections": 40, "per_class": {"circle": {"AP": 0.1, "AP50": 0.2, "gt": 3}}}
    entry = budget.yolo_entry(summary, metrics, skip_steps=1, eval_s=2.0, run_dir=tmp_path)
    result, recipe = entry["result"], entry["recipe"]
    # Same fields as the other rows: steps 2..3 are 8 images in 3 s.
    assert result["AP"] == 0.1 and result["per_class"]["circle"]["AP"] == 0.1 and result["num_images"] == 4
    assert result["steps"] == 3 and result["measured_images"] == 8 and result["images_per_s"] == pytest.approx(8 / 3)
    assert result["train_s"] == 4.5 and result["eval_s"] == 2.0 and result["final_loss"] == 12.5
    assert recipe["name"] == "yolo11n_default" and recipe["params"] == 2590815 and recipe["image_size"] == 256
    assert recipe["checkpoint"] == "/r/last.pt" and recipe["optimizer_steps"] == 0
    table = budget.format_table({"yolo11n_default": entry})
    assert "yolo11n_default: yolo11n (ultralytics 8.4.190)" in table and "circle" in table



def test_check_yolo_python(budget: ModuleType, tmp_path: Path) -> None:
    # Fails before the long runs: a missing interpreter, or one without Ultralytics (this environment's).
    with pytest.raises(SystemExit, match="make yolo-env"):
        budget.check_yolo_python(tmp_path / "python")
    if importlib.util.find_spec("ultralytics") is None:
        with pytest.raises(SystemExit, match="has no ultralytics"):
            budget.check_yolo_python(Path(sys.executable))
