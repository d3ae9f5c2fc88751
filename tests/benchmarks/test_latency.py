"""benchmarks/latency.py on a tiny configuration: the JSON's keys, types and internal consistency (no timings)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "benchmarks" / "latency.py"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "cpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--preset", "ssdlite_mobilenetv2", "--image-size", "128", "--threads", "1",
         "--batch", "1", "--width-mult", "0.35", "--num-classes", "6", "--repeats", "3", "--warmup", "1",
         "--candidates", "50", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "post-processing" in proc.stdout
    return json.loads(out.read_text())


def _summary(s: dict) -> None:
    assert set(s) >= {"median", "p90"}
    assert isinstance(s["median"], float) and s["median"] > 0
    assert s["p90"] >= s["median"]


def test_top_level_keys(result: dict) -> None:
    assert set(result) >= {"date", "command", "machine", "settings", "models", "latency_ms", "postprocess_ms",
                           "stages_ms", "ratios", "postprocess_speedup"}
    assert set(result["ratios"]) == {"eager", "onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8"}
    assert result["settings"]["threads"] == 1 and result["settings"]["batch"] == 1
    assert result["settings"]["image_size"] == 128
    assert result["machine"]["cores"] >= 1


def test_sizes(result: dict) -> None:
    for name in ("ours", "torchvision"):
        assert isinstance(result["models"][name]["params"], int) and result["models"][name]["params"] > 0
        assert isinstance(result["models"][name]["macs"], int) and result["models"][name]["macs"] > 0


def test_latencies_and_ratios_consistent(result: dict) -> None:
    latency = result["latency_ms"]
    assert latency["ours_eager"] is not None and latency["torchvision_eager"] is not None
    reference = latency["torchvision_eager"]["whole"]["median"]
    for key, path in (("eager", "ours_eager"), ("onnx_fp32", "onnx_fp32"), ("onnx_int8", "onnx_int8"),
                      ("openvino_fp32", "openvino_fp32"), ("openvino_int8", "openvino_int8")):
        if latency[path] is None:
            assert result["ratios"][key] is None
            continue
        _summary(latency[path]["core"])
        _summary(latency[path]["whole"])
        assert result["ratios"][key] == pytest.approx(latency[path]["whole"]["median"] / reference)
    _summary(latency["torchvision_eager"]["core"])


def test_openvino_against_onnxruntime_on_the_same_files(result: dict) -> None:
    latency, versus = result["latency_ms"], result["openvino_vs_onnxruntime"]
    has_openvino = result["machine"]["openvino"] is not None
    assert (latency["openvino_fp32"] is not None) == has_openvino
    assert has_openvino or any("openvino: not installed" in note for note in result["notes"])
    for quant in ("fp32", "int8"):
        ov, ort = latency[f"openvino_{quant}"], latency[f"onnx_{quant}"]
        if ov is None or ort is None:
            assert versus[f"openvino_{quant}"]["whole"] is None
            continue
        for part in ("core", "whole"):
            assert versus[f"openvino_{quant}"][part] == pytest.approx(ov[part]["median"] / ort[part]["median"])


def test_postprocess_speedup(result: dict) -> None:
    pp = result["postprocess_ms"]
    _summary(pp["ours"])
    _summary(pp["torchvision"])
    assert result["postprocess_speedup"] == pytest.approx(pp["torchvision"]["median"] / pp["ours"]["median"])
    assert pp["same_detections"] is True  # both post-processors agree on the same raw outputs


def test_calibration_reaches_target(result: dict) -> None:
    calibration = result["settings"]["calibration"]
    for name in ("ours", "torchvision"):
        assert calibration[name]["candidates_per_image"] == pytest.approx(50, abs=15)
