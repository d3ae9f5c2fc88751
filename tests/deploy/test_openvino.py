"""OpenVINO backend: the same exported files as ONNX Runtime give the same raw outputs and detections
(fp32, with and without NMS in the graph, fixed and dynamic batch), the same metadata, and int8 close
to ONNX Runtime's int8; Predictor and the tools select it by name."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detector import Predictor
from detector.deploy.onnx_export import export_onnx
from detector.deploy.onnx_runtime import OnnxRunner, load_onnx_runner
from detector.deploy.quantize import quantize_onnx
from detector.inference import BACKENDS, EXPORT_RUNTIMES, TorchRunner, load_runner
from tests.deploy.int8_checks import BREAKAGES, MAX_MEAN_ERROR_STEPS, broken_copy, mean_error_in_steps, output_steps
from tests.deploy.test_onnx_export import (
    LABELS,
    assert_faithful,
    assert_same_detections,
    inputs,
    synthetic_frames,
    trained,
)

pytest.importorskip("openvino")
from detector.deploy.openvino_runtime import (  # noqa: E402
    OpenVinoSession,
    compile_settings,
    load_openvino_runner,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("openvino")
    model = trained()
    paths = {"raw": out / "raw.onnx", "nms": out / "nms.onnx", "static": out / "static.onnx"}
    export_onnx(model, LABELS, paths["raw"], dynamic_batch=True)
    export_onnx(model, LABELS, paths["nms"], dynamic_batch=True, with_nms=True)
    export_onnx(model, LABELS, paths["static"])
    calib = out / "calib"
    calib.mkdir()
    for i, (frame, _) in enumerate(synthetic_frames(16, seed=21)):
        cv2.imwrite(str(calib / f"{i:03d}.jpg"), frame[..., ::-1])
    paths["int8"] = quantize_onnx(paths["raw"], out / "raw.int8.onnx", calib, calibration_count=12).path
    return paths


def test_raw_outputs_match_pytorch(exported):
    runner = load_openvino_runner(exported["raw"], num_threads=1)
    assert isinstance(runner, OnnxRunner) and isinstance(runner.session, OpenVinoSession)
    x = inputs("synthetic", 3)
    assert_faithful(runner.run(x), trained(), x)


@pytest.mark.parametrize("graph", ["raw", "nms"])
def test_detections_match_onnxruntime_and_pytorch(exported, graph):
    x = inputs("synthetic", 4)
    sizes = [(480, 640), (128, 128), (300, 200), (720, 1280)]
    ours = load_openvino_runner(exported[graph], num_threads=1)(x, sizes)
    ort = load_onnx_runner(exported[graph], num_threads=1)(x, sizes)
    with torch.no_grad():
        eager = TorchRunner(trained())(x, sizes)
    assert sum(len(d["boxes"]) for d in ort) >= 8  # enough detections to compare
    for a, b, c in zip(ours, ort, eager):
        assert_same_detections(b, a)
        assert_same_detections(c, a)


def test_fixed_batch_graph_is_fed_in_chunks(exported):
    runner = load_openvino_runner(exported["static"], num_threads=1)
    assert runner.fixed_batch == 1
    x = inputs("synthetic", 3)
    chunked = runner.run(x)
    one_by_one = [runner.run(x[i: i + 1]) for i in range(3)]
    for b, parts in enumerate(one_by_one):
        for whole, part in zip(chunked, parts):
            np.testing.assert_array_equal(whole[b: b + 1], part)


def test_same_metadata_and_settings(exported):
    ov_runner = load_openvino_runner(exported["nms"], num_threads=2)
    assert ov_runner.info == load_onnx_runner(exported["nms"]).info
    assert ov_runner.info.label_map == LABELS and ov_runner.info.with_nms
    compiled = ov_runner.session.compiled
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    assert str(compiled.get_property("PERFORMANCE_HINT")) in ("LATENCY", "PerformanceMode.LATENCY")
    assert "32" in str(compiled.get_property("INFERENCE_PRECISION_HINT"))  # f32: the file's numbers
    assert compile_settings(4, extra={"NUM_STREAMS": 1}) == {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 4, "NUM_STREAMS": 1}


def test_int8_file_runs_close_to_onnxruntime_int8(exported):
    """The QDQ file's int8 kernels differ between the runtimes (rounding of requantisation), so not
    identical: OpenVINO's int8 raw outputs are within the same few quantisation steps of fp32 as ONNX
    Runtime's (tests/deploy/int8_checks.py), and as far from fp32 as ONNX Runtime's (mean |error|
    within 1.5x)."""
    x = inputs("synthetic", 4)
    fp32 = load_onnx_runner(exported["raw"], num_threads=1).run(x)
    ov_out = load_openvino_runner(exported["int8"], num_threads=1).run(x)
    ort_out = load_onnx_runner(exported["int8"], num_threads=1).run(x)
    errors = mean_error_in_steps(ov_out, fp32, output_steps(exported["int8"]))
    assert 0 < max(errors) <= MAX_MEAN_ERROR_STEPS, errors
    for ov, ort, ref in zip(ov_out, ort_out, fp32):
        ov_error, ort_error = np.abs(ov - ref).mean(), np.abs(ort - ref).mean()
        assert 0 < ov_error < 1.5 * ort_error, (ov_error, ort_error)


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_int8_bound_fails_for_broken_files_on_openvino(exported, tmp_path, breakage):
    x = inputs("synthetic", 4)
    fp32 = load_onnx_runner(exported["raw"], num_threads=1).run(x)
    broken = broken_copy(exported["int8"], breakage, "one", tmp_path / "broken.int8.onnx")
    errors = mean_error_in_steps(load_openvino_runner(broken, num_threads=1).run(x), fp32,
                                 output_steps(exported["int8"]))
    assert max(errors) > MAX_MEAN_ERROR_STEPS, errors


def test_predictor_and_load_runner_select_openvino(exported, tmp_path):
    assert set(EXPORT_RUNTIMES) == {"onnxruntime", "openvino"} and BACKENDS["openvino"] == "openvino"
    predictor = Predictor.load(exported["raw"], "openvino", score_threshold=0.2)
    assert isinstance(predictor.runner.session, OpenVinoSession)
    image = synthetic_frames(1, seed=3)[0][0]
    reference = Predictor.load(exported["raw"], "onnx", score_threshold=0.2).predict(image)
    got = predictor.predict(image)
    assert_same_detections(reference, got)
    assert got["names"] == reference["names"]
    runner, label_map = load_runner(exported["raw"], runtime="openvino")
    assert isinstance(runner.session, OpenVinoSession) and label_map == LABELS
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_runner(exported["raw"], runtime="tensorrt")
    checkpoint = tmp_path / "model.ckpt"
    from detector import save_checkpoint

    save_checkpoint(checkpoint, trained(), LABELS)
    with pytest.raises(ValueError, match="is not one"):
        Predictor.load(checkpoint, "openvino")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_openvino_runner(tmp_path / "missing.onnx")


# Runs in a fresh interpreter: a crash must fail this test, not kill the pytest process.
_RELEASE_IN_CREATION_ORDER = """
import gc, signal, subprocess, sys
import numpy as np
from detector.deploy.openvino_runtime import OpenVinoSession, compile_model, shared_core
signal.signal(signal.SIGCHLD, lambda *args: None)  # a Python handler, as torch's DataLoader installs
first = OpenVinoSession(compile_model(sys.argv[1]))
second = OpenVinoSession(compile_model(sys.argv[1]))
assert shared_core() is shared_core()
first.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})
del first; gc.collect()   # released in the order they were made
del second; gc.collect()
subprocess.run([sys.executable, "-c", "pass"], check=True)  # its exit sends SIGCHLD
print("alive")
"""


def test_models_released_in_creation_order_leave_signal_handling_intact(tmp_path):
    # Two OpenVINO Cores released in creation order leave the CPU plugin's freed alternate signal
    # stack installed; the next handled signal was a SIGSEGV (the full suite died of it). Every
    # model compiles on one shared Core, so this must exit cleanly.
    import subprocess
    import sys

    static = tmp_path / "small.onnx"
    export_onnx(trained(), LABELS, static, image_size=64)
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _RELEASE_IN_CREATION_ORDER, str(static)],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0 and "alive" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
