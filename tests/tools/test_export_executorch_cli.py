"""tools/export.py --output model.pte: the ExecuTorch programs and sidecars it writes (fp32, int8), what
it prints, and the ONNX-only flags it refuses."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("executorch")

from detector import LabelMap, build_model, save_checkpoint  # noqa: E402
from detector.data.synthetic import SyntheticConfig, render_image  # noqa: E402
from detector.deploy.executorch_runtime import load_executorch_runner  # noqa: E402
from detector.deploy.preprocess import ImagePreprocessor  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIZE = 128
LABELS = LabelMap((1, 2), ("car", "sign"))


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}_executorch", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.ckpt`` (random weights, non-trivial BatchNorm statistics) and ``calibration/`` (3 frames)."""
    root = tmp_path_factory.mktemp("export_pte")
    torch.manual_seed(0)
    model = build_model(num_classes=LABELS.num_classes, width_mult=0.35, image_size=SIZE)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    save_checkpoint(root / "model.ckpt", model.eval(), LABELS)
    (root / "calibration").mkdir()
    config = SyntheticConfig(image_size=SIZE, min_size=24, small_fraction=0.0)
    for i in range(3):
        image, _ = render_image(np.random.default_rng([5, i]), config)
        Image.fromarray(image).save(root / "calibration" / f"{i}.png")
    return root


def export(workdir: Path, output: Path, *flags: str) -> int:
    return load_tool("export").main(["--checkpoint", str(workdir / "model.ckpt"), "--output", str(output), *flags])


def test_pte_with_sidecar_and_summary(workdir, tmp_path, capsys):
    """A real fp32 export through the tool, with ``--dynamic-batch``: the program, its sidecar, what it
    prints, PyTorch's outputs; and a sliced frame's views in one call, with the detections the same
    program gives view by view. (The batch-1 program is exported for real in tests/deploy/test_executorch.py;
    one lowering here keeps the suite short.)"""
    out = tmp_path / "deploy" / "model.pte"
    assert export(workdir, out, "--dynamic-batch") == 0
    sidecar = tmp_path / "deploy" / "model.pte.json"
    assert sorted(out.parent.iterdir()) == [out, sidecar]
    text = capsys.readouterr().out
    assert str(out) in text and str(sidecar) in text
    assert "float32[B<=8, 3, 128, 128]" in text and "2 classes (car, sign)" in text and "operators in XNNPACK" in text
    document = json.loads(sidecar.read_text())
    assert document["runtime"] == "executorch" and document["int8"] is False
    assert document["label_map"] == LABELS.to_dict()
    assert document["input"]["shape"] == [8, 3, SIZE, SIZE]

    from detector.checkpoint import load_checkpoint

    model, _ = load_checkpoint(workdir / "model.ckpt")
    image, _ = render_image(np.random.default_rng(99), SyntheticConfig(image_size=SIZE))
    x = ImagePreprocessor(SIZE, model.mean, model.std)([image])
    with torch.no_grad():
        expected = model(x)
    runner = load_executorch_runner(out)
    assert runner.info.label_map == LABELS and runner.max_batch == 8
    for a, b in zip(runner.run(x), expected):
        assert a.shape == b.shape and float((a - b).abs().max()) < 1e-4 * float(b.abs().max())
    assert len(runner(x, [(300, 400)])) == 1

    from detector import Predictor
    from detector.slicing import Slicing

    calls = []
    execute = runner.method.execute
    runner.method = type("Counted", (), {"execute": lambda self, inputs: calls.append(inputs[0].shape[0]) or execute(inputs),
                                         "metadata": runner.method.metadata})()
    wide = np.concatenate([image, image[:, ::-1], image], axis=1)  # 128x384: the whole frame and 4 tiles
    predictor = Predictor(runner, LABELS, slicing=Slicing())
    batched = predictor.predict(wide)
    assert calls == [5]  # every view in one call
    runner.max_batch = 1
    view_by_view = predictor.predict(wide)
    assert calls == [5, 1, 1, 1, 1, 1]
    assert len(batched["scores"]) == len(view_by_view["scores"]) > 0
    np.testing.assert_allclose(batched["boxes"], view_by_view["boxes"], atol=1e-3)
    np.testing.assert_allclose(batched["scores"], view_by_view["scores"], atol=1e-5)
    assert batched["names"] == view_by_view["names"]


def test_int8_flag_writes_model_int8_pte_beside_fp32(workdir, tmp_path, capsys, monkeypatch):
    """``--int8``: a second export, int8, to ``model.int8.pte``, on the listed calibration images. The
    exports themselves are stubbed (tests/deploy/test_executorch.py runs a real int8 one: lowering an
    int8 graph takes a minute); this checks what the tool asks for and reports."""
    from detector.deploy import executorch_export

    calls = []

    def fake_export(model, label_map, output, **kwargs):
        calls.append((Path(output), kwargs))
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(b"program")
        int8 = kwargs.get("int8", False)
        info = executorch_export.detector_info(model, label_map, with_nms=False)
        return executorch_export.ExecuTorchExportResult(
            path=output, sidecar=executorch_export.sidecar_path(output), metadata={}, size_bytes=7, int8=int8,
            delegated_ops=300, calibration_images=len(kwargs.get("calibration_images") or []),
            max_abs_diff=0.5 if int8 else 1e-6, info=info, num_anchors=int(model.anchors.shape[0]))

    monkeypatch.setattr(executorch_export, "export_executorch", fake_export)
    out = tmp_path / "model.pte"
    code = export(workdir, out, "--int8", "--calibration-images", str(workdir / "calibration"),
                  "--calibration-count", "2")
    assert code == 0
    (fp32_path, fp32_kwargs), (int8_path, int8_kwargs) = calls
    assert fp32_path == out and not fp32_kwargs.get("int8", False)
    assert int8_path == tmp_path / "model.int8.pte" and int8_kwargs["int8"] is True
    assert [p.name for p in int8_kwargs["calibration_images"]] == ["0.png", "2.png"]  # 2 spread over 3
    text = capsys.readouterr().out
    assert str(out) in text and str(int8_path) in text and str(tmp_path / "model.int8.pte.json") in text
    assert "calibrated on 2 images" in text and "try:" in text and "model.int8.pte" in text.splitlines()[-1]
    # The hint is the tool that runs the program (issue #39), not a python -c one-liner.
    assert text.splitlines()[-1].startswith("try: python tools/predict.py --checkpoint") and "python -c" not in text


@pytest.mark.parametrize("flags", [["--with-nms"], ["--opset", "17"]])
def test_onnx_only_flags_are_refused(workdir, tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exit_info:
        export(workdir, tmp_path / "m.pte", *flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flags[0] in err and "ONNX options" in err and ".pte" in err
    assert not (tmp_path / "m.pte").exists()


def test_other_suffixes_are_refused(workdir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        export(workdir, tmp_path / "m.tflite")
    assert "--output must end in .onnx (ONNX) or .pte (ExecuTorch)" in capsys.readouterr().err


def test_bad_calibration_folder_and_checkpoint_fail_before_lowering(workdir, tmp_path, capsys):
    code = export(workdir, tmp_path / "m.pte", "--int8", "--calibration-images", str(tmp_path / "empty"))
    assert code == 2 and "empty" in capsys.readouterr().err
    assert not (tmp_path / "m.pte").exists()
    tool = load_tool("export")
    assert tool.main(["--checkpoint", str(tmp_path / "nope.ckpt"), "--output", str(tmp_path / "m.pte")]) == 2
    assert "nope.ckpt" in capsys.readouterr().err
