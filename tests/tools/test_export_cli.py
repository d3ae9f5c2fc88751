"""tools/export.py: the files it writes (fp32, int8, metadata, flags), its errors, and tools/eval.py
scoring the .onnx exactly like the checkpoint it came from."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from detector import LabelMap, Predictor, build_model, save_checkpoint
from detector.data.io import load_image
from detector.data.synthetic import SyntheticConfig, make_split
from detector.deploy.metadata import read_metadata

ROOT = Path(__file__).resolve().parents[2]
SIZE = 128
SYNTH = SyntheticConfig(image_size=SIZE, min_size=24, small_fraction=0.0, clutter=4)


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained 20 steps on a tiny synthetic train split (scores that rank boxes, so
    AP is not decided by ties), and a val split in COCO format."""
    root = tmp_path_factory.mktemp("export_cli")
    train = make_split(root / "data", "train", 16, seed=0, config=SYNTH)
    make_split(root / "data", "val", 6, seed=0, config=SYNTH)
    label_map = LabelMap.from_categories(train["categories"])
    torch.manual_seed(0)
    model = build_model(num_classes=label_map.num_classes, width_mult=0.35, image_size=SIZE)  # default BN eps
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    images = [torch.from_numpy(load_image(root / "data" / "train" / im["file_name"])).permute(2, 0, 1)
              for im in train["images"]]
    x = (torch.stack(images).float() / 255 - mean) / std
    targets = []
    for im in train["images"]:
        anns = [a for a in train["annotations"] if a["image_id"] == im["id"]]
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.tensor([label_map.label_of_category(a["category_id"]) for a in anns])})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(20):
        idx = [(step * 8 + j) % 16 for j in range(8)]
        loss = model.compute_loss(x[idx], [targets[i] for i in idx])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for m in model.modules():  # BN statistics of the data, not of 20 momentum updates
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x)
    save_checkpoint(root / "model.ckpt", model.eval(), label_map)
    return root


def export(workdir: Path, output: Path, *flags: str) -> int:
    return load_tool("export").main(["--checkpoint", str(workdir / "model.ckpt"), "--output", str(output), *flags])


def test_export_with_nms_and_int8_writes_both_files_and_says_where(workdir, tmp_path, capsys):
    out = tmp_path / "deploy" / "model.onnx"
    code = export(workdir, out, "--dynamic-batch", "--with-nms", "--int8", "--calibration-images",
                  str(workdir / "data" / "train"), "--calibration-count", "5")
    assert code == 0
    int8 = tmp_path / "deploy" / "model.int8.onnx"
    assert out.is_file() and int8.is_file()
    text = capsys.readouterr().out
    assert str(out) in text and str(int8) in text and "calibrated on 5 images" in text
    fp32_info, int8_info = read_metadata(out), read_metadata(int8)
    assert fp32_info.with_nms and not fp32_info.int8
    assert int8_info.int8 and int8_info.quantization["calibration_images"] == 5 and int8_info.with_nms
    assert int8_info.label_map.names == ("circle", "square", "triangle", "star", "cross")
    assert int8.stat().st_size < 0.6 * out.stat().st_size  # int8 weights
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "NonMaxSuppression"} <= ops
    # The int8 file alone drives the Predictor: the user's ids and names, boxes in the photo's pixels.
    photo = load_image(next((workdir / "data" / "val").glob("*.jpg")))
    det = Predictor.from_checkpoint(int8, num_threads=1).predict_batch([photo, photo[:100, :90]])
    assert det[1]["boxes"].shape[1] == 4 and (det[1]["boxes"][:, 2] <= 90).all()
    assert set(det[0]["category_ids"].tolist()) <= {1, 2, 3, 4, 5}


def test_image_size_and_opset_flags(workdir, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert export(workdir, out, "--image-size", "160", "--opset", "13") == 0
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 160, 160]  # no --dynamic-batch: batch 1
    assert read_metadata(out).image_size == (160, 160)
    assert "float32[1, 3, 160, 160]" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--int8"], "--int8 needs --calibration-images"),
    (["--calibration-images", "x"], "applies to --int8 only"),
    (["--opset", "9"], "--opset must be at least 11"),
])
def test_argument_errors(workdir, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        export(workdir, tmp_path / "m.onnx", *flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_checkpoint_and_calibration_folder_are_clear_errors(workdir, tmp_path, capsys):
    tool = load_tool("export")
    assert tool.main(["--checkpoint", str(tmp_path / "nope.ckpt"), "--output", str(tmp_path / "m.onnx")]) == 2
    assert "nope.ckpt" in capsys.readouterr().err
    code = export(workdir, tmp_path / "m.onnx", "--int8", "--calibration-images", str(tmp_path / "empty"))
    assert code == 2 and "empty" in capsys.readouterr().err


def test_eval_scores_the_onnx_like_the_checkpoint(workdir, tmp_path):
    """``tools/eval.py --checkpoint model.onnx``: the same metrics as the checkpoint, with and without NMS in the graph."""
    assert export(workdir, tmp_path / "raw.onnx", "--dynamic-batch") == 0
    assert export(workdir, tmp_path / "nms.onnx", "--with-nms") == 0  # fixed batch 1: fed image by image
    eval_tool = load_tool("eval")
    metrics = {}
    for name, model in (("ckpt", workdir / "model.ckpt"), ("raw", tmp_path / "raw.onnx"), ("nms", tmp_path / "nms.onnx")):
        out = tmp_path / name / "metrics.json"
        code = eval_tool.main(["--checkpoint", str(model), "--images", str(workdir / "data" / "val"),
                               "--annotations", str(workdir / "data" / "val.json"), "--output", str(out),
                               "--batch-size", "3", "--num-workers", "0", "--device", "cpu"])
        assert code == 0
        metrics[name] = json.loads(out.read_text())
        metrics[name]["dets"] = json.loads((tmp_path / name / "detections.json").read_text())
    ckpt = metrics["ckpt"]
    assert ckpt["num_detections"] > 50 and ckpt["AP50"] > 0  # something to compare
    for name in ("raw", "nms"):
        assert metrics[name]["num_detections"] == ckpt["num_detections"]
        for key in ("AP", "AP50", "AP75", "AR100"):
            assert abs(metrics[name][key] - ckpt[key]) < 1e-4, (name, key, metrics[name][key], ckpt[key])
        ref = sorted((d["image_id"], d["category_id"], round(d["score"], 3)) for d in ckpt["dets"])
        got = sorted((d["image_id"], d["category_id"], round(d["score"], 3)) for d in metrics[name]["dets"])
        assert sum(a != b for a, b in zip(ref, got)) <= 0.02 * len(ref)  # rounding at the 3rd digit only
        boxes_ref = np.array(sorted(d["bbox"] for d in ckpt["dets"]))
        boxes_got = np.array(sorted(d["bbox"] for d in metrics[name]["dets"]))
        assert np.abs(boxes_ref - boxes_got).max() < 0.05



def test_pickle_payload_checkpoint_is_refused_without_running_it(tmp_path, capsys, code_payload):
    marker = code_payload.marker
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "detector": {"config": code_payload}}, evil)
    torch.load(evil, weights_only=False)  # the payload is live: unpickled unsafely, it runs
    assert marker.is_file()
    marker.unlink()
    code = load_tool("export").main(["--checkpoint", str(evil), "--output", str(tmp_path / "m.onnx")])
    assert code == 2
    err = capsys.readouterr().err
    assert "evil.ckpt" in err and "weights_only=True" in err
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()
