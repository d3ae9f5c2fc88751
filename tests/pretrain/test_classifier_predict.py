"""Top-5 predictions: the right classes, most probable first, from the API and from tools/predict.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from classifier_helpers import COLOURS, colour_image, load_tool
from detector.pretrain import ClassifierPredictor


def test_predict_returns_topk_in_probability_order(trained_run: Path) -> None:
    predictor = ClassifierPredictor.from_checkpoint(trained_run / "checkpoints" / "best.ckpt")
    rng = np.random.default_rng(5)
    names = ["red", "green", "blue", "yellow"]
    images = [colour_image(COLOURS[name], 48, rng) for name in names]
    top = predictor.predict(images, k=5)
    probs = predictor.probabilities(images)
    for row, p, name in zip(top, probs, names):
        assert len(row) == 4  # only 4 classes exist
        assert [label for label, _ in row] == [predictor.class_names[i] for i in torch.argsort(p, descending=True)]
        scores = [score for _, score in row]
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
        assert row[0][0] == name
    assert [len(r) for r in predictor.predict(images[:1], k=2)] == [2]


def test_tools_predict_prints_top5_per_image(trained_run: Path, colour_data: Path, tmp_path: Path, capsys) -> None:
    tool = load_tool("predict")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("red", "blue"):
        (folder / f"{name}.png").write_bytes((colour_data / "val" / name / "000.png").read_bytes())
    (folder / "broken.jpg").write_bytes(b"nope")
    status = tool.main(["--checkpoint", str(trained_run / "checkpoints" / "best.ckpt"), "--input", str(folder),
                        "--output", str(tmp_path / "out"), "--no-progress"])
    assert status == 0
    captured = capsys.readouterr()
    lines = dict(line.split(": ", 1) for line in captured.out.strip().splitlines())
    assert set(lines) == {"blue.png", "red.png"}
    for file_name, line in lines.items():
        entries = [entry.rsplit(" ", 1) for entry in line.split(", ")]
        assert entries[0][0] == file_name.removesuffix(".png") and len(entries) == 4
        scores = [float(score) for _, score in entries]
        assert scores == sorted(scores, reverse=True)
    assert "broken.jpg" in captured.err
    saved = json.loads((tmp_path / "out" / "classifications.json").read_text())
    assert [item["file_name"] for item in saved] == ["blue.png", "red.png"]



def test_pickle_payload_classifier_checkpoint_is_refused_without_running_it(tmp_path: Path, capsys,
                                                                             code_payload) -> None:
    import pytest

    from detector.pretrain import export_classifier_onnx, is_classifier_checkpoint

    marker = code_payload.marker
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "classifier": {"config": code_payload, "class_names": ["a"]}}, evil)
    torch.load(evil, weights_only=False)  # the payload is live: unpickled unsafely, it runs
    assert marker.is_file()
    marker.unlink()
    with pytest.raises(ValueError, match=r"evil\.ckpt.*weights_only=True"):
        ClassifierPredictor.from_checkpoint(evil)
    with pytest.raises(ValueError, match=r"evil\.ckpt.*weights_only=True"):
        export_classifier_onnx(evil, tmp_path / "x.onnx")
    assert not is_classifier_checkpoint(evil)
    # tools/predict.py refuses it too (it is then tried as a detector checkpoint, as data only).
    assert load_tool("predict").main(["--checkpoint", str(evil), "--input", str(tmp_path),
                                      "--output", str(tmp_path / "out")]) == 1
    assert "weights_only=True" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "x.onnx").exists()
