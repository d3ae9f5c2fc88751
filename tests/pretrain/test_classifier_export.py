"""ONNX export of a classifier checkpoint: the same logits under ONNX Runtime, labels in the metadata."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from classifier_helpers import COLOURS, load_tool
from detector.pretrain import export_classifier_onnx, load_classifier


def test_onnx_logits_match_pytorch_and_metadata(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    path = export_classifier_onnx(checkpoint, tmp_path / "classifier.onnx", dynamic_batch=True)
    model, _ = load_classifier(checkpoint)
    images = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        expected = model(images).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    assert logits.shape == (3, 4)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)

    meta = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert meta["task"] == "classification"
    assert meta["class_names"] == sorted(COLOURS)
    assert meta["image_size"] == [48, 48]
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]


def test_tools_export_dispatches_classifier_checkpoints(trained_run: Path, tmp_path: Path, capsys) -> None:
    tool = load_tool("export")
    output = tmp_path / "from_tool.onnx"
    assert tool.main(["--checkpoint", str(trained_run / "checkpoints" / "last.ckpt"), "--output", str(output),
                      "--image-size", "64"]) == 0
    assert "classifier" in capsys.readouterr().out
    proto = onnx.load(str(output))
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["image_size"] == [64, 64]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]
    assert tool.main(["--checkpoint", str(trained_run / "checkpoints" / "last.ckpt"), "--output", str(output),
                      "--with-nms"]) == 2


def test_int8_onnx_export_classifies_as_the_checkpoint(trained_run: Path, colour_data: Path, tmp_path: Path,
                                                       capsys) -> None:
    """--int8 also writes a QDQ int8 file, calibrated on images pre-processed as the classifier's own;
    tools/predict.py classifies with it (and with the fp32 file) the way the checkpoint does."""
    tool = load_tool("export")
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    output = tmp_path / "colours.onnx"
    assert tool.main(["--checkpoint", str(checkpoint), "--output", str(output), "--int8",
                      "--calibration-images", str(colour_data / "train"), "--calibration-count", "16"]) == 0
    int8 = tmp_path / "colours.int8.onnx"
    proto = onnx.load(str(int8))
    assert sum(node.op_type == "QuantizeLinear" for node in proto.graph.node) > 10
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["int8"]) is True and json.loads(meta["quantization"])["calibration_images"] == 16
    predict = load_tool("predict")
    capsys.readouterr()
    tops = {}
    for model in (checkpoint, output, int8):
        assert predict.main(["--checkpoint", str(model), "--input", str(colour_data / "val"),
                             "--output", str(tmp_path / "out" / model.name)]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        tops[model.name] = [line.split(": ")[1].split(" ")[0] for line in lines]
    assert len(tops[checkpoint.name]) == 40
    assert tops["colours.onnx"] == tops[checkpoint.name] == tops["colours.int8.onnx"]
