"""``--backend openvino`` in tools/predict.py, tools/eval.py and tools/demo_video.py: the same results
as ``--backend onnx`` on the same exported file, and clear errors for what it cannot run."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detector import LabelMap, build_model, save_checkpoint
from detector.deploy.onnx_export import export_onnx

pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[2]
LABELS = LabelMap((3, 7), ("cat", "dog"))


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}_ov", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint and its export (random weights, biased so there are detections), 5 photos with
    ground truth."""
    root = tmp_path_factory.mktemp("ov_cli")
    torch.manual_seed(0)
    model = build_model(num_classes=3, width_mult=0.35, image_size=128, score_threshold=0.05).eval()
    save_checkpoint(root / "model.ckpt", model, LABELS)
    export_onnx(model, LABELS, root / "model.onnx", dynamic_batch=True)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    entries, annotations = [], []
    for i in range(5):
        picture = rng.integers(0, 80, (120, 160, 3), dtype=np.uint8)
        picture[30:90, 40:120] = (220, 190, 30)
        Image.fromarray(picture).save(images / f"{i}.png")
        entries.append({"id": i + 1, "file_name": f"{i}.png", "width": 160, "height": 120})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 3, "bbox": [40, 30, 80, 60],
                            "area": 4800, "iscrowd": 0})
    gt = {"images": entries, "annotations": annotations,
          "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    (root / "gt.json").write_text(json.dumps(gt))
    return {"root": root, "ckpt": root / "model.ckpt", "onnx": root / "model.onnx", "images": images,
            "gt": root / "gt.json"}


def detections(path: Path) -> dict[tuple[int, int], tuple[list[float], float]]:
    """``(image_id, category_id) -> (best box, score)`` of a COCO results file."""
    best: dict[tuple[int, int], tuple[list[float], float]] = {}
    for d in json.loads(path.read_text()):
        key = (d["image_id"], d["category_id"])
        if key not in best or d["score"] > best[key][1]:
            best[key] = (d["bbox"], d["score"])
    return best


def assert_same_results(a: Path, b: Path) -> None:
    """Same number of detections; the best box of every (image, class) within 0.05 px and 1e-4 in score."""
    assert len(json.loads(a.read_text())) == len(json.loads(b.read_text())) > 0
    da, db = detections(a), detections(b)
    assert da.keys() == db.keys()
    for key in da:
        np.testing.assert_allclose(da[key][0], db[key][0], atol=0.05)
        assert abs(da[key][1] - db[key][1]) < 1e-4


def test_predict_openvino_matches_onnx(files, tmp_path):
    tool = load_tool("predict")
    for backend in ("onnx", "openvino"):
        assert tool.main(["--checkpoint", str(files["onnx"]), "--input", str(files["images"]), "--output",
                          str(tmp_path / backend), "--backend", backend, "--score-threshold", "0.05",
                          "--no-progress"]) == 0
    assert_same_results(tmp_path / "onnx" / "detections.json", tmp_path / "openvino" / "detections.json")


def test_eval_openvino_matches_onnx_and_takes_a_scorer_too(files, tmp_path, capsys):
    tool = load_tool("eval")
    common = ["--checkpoint", str(files["onnx"]), "--images", str(files["images"]), "--annotations", str(files["gt"]),
              "--num-workers", "0", "--batch-size", "2", "--score-threshold", "0.01"]
    metrics = {}
    for name, backends in (("onnx", []),  # an .onnx: ONNX Runtime by default
                           ("openvino", ["--backend", "openvino", "--backend", "faster-coco-eval"])):
        out = tmp_path / name / "metrics.json"
        assert tool.main(common + backends + ["--output", str(out)]) == 0
        metrics[name] = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "faster-coco-eval, model on openvino" in printed
    assert "(pycocotools, model on onnx" in printed  # an .onnx runs on ONNX Runtime by default, never torch
    assert metrics["onnx"]["num_detections"] == metrics["openvino"]["num_detections"] > 0
    for key in ("AP", "AP50", "AP75"):
        assert abs(metrics["onnx"][key] - metrics["openvino"][key]) < 1e-3, key
    assert_same_results(tmp_path / "onnx" / "detections.json", tmp_path / "openvino" / "detections.json")


def test_eval_backend_errors(files, tmp_path, capsys):
    tool = load_tool("eval")
    with pytest.raises(SystemExit):
        tool.parse_args(["--detections", "d.json", "--annotations", "a.json", "--backend", "openvino"])
    assert "applies to --checkpoint only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args(["--detections", "d.json", "--annotations", "a.json", "--backend", "pycocotools",
                         "--backend", "faster-coco-eval"])
    assert "at most one scorer" in capsys.readouterr().err
    args = tool.parse_args(["--detections", "d.json", "--annotations", "a.json"])
    assert (args.backend, args.runtime) == ("pycocotools", "torch")
    assert tool.main(["--checkpoint", str(files["ckpt"]), "--images", str(files["images"]), "--annotations",
                      str(files["gt"]), "--backend", "openvino", "--output", str(tmp_path / "m.json")]) == 2
    assert "is not one" in capsys.readouterr().err
    from detector.inference import BACKENDS

    assert tuple(BACKENDS) == tool.MODEL_BACKENDS


def test_demo_video_openvino_matches_onnx(files, tmp_path):
    tool = load_tool("demo_video")
    summaries = {}
    for backend in ("onnx", "openvino"):
        out = tmp_path / backend / "out.mp4"
        assert tool.main(["--checkpoint", str(files["onnx"]), "--input", str(files["images"]), "--output", str(out),
                          "--backend", backend, "--score-threshold", "0.05", "--no-progress"]) == 0
        summaries[backend] = json.loads(out.with_suffix(".json").read_text())
    frames = {b: s["frames"] for b, s in summaries.items()}
    counts = {b: [len(f["detections"]) for f in fr] for b, fr in frames.items()}
    assert counts["onnx"] == counts["openvino"] and sum(counts["onnx"]) > 0
    with pytest.raises(SystemExit, match="is not one"):
        tool.build_detect_fn(files["ckpt"], "openvino", "cpu")
