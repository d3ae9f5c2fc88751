"""benchmarks/openvino_settings.py on a tiny model: every variant and ONNX Runtime are timed on both files,
and the settings it reports are the ones OpenVINO compiled with (no timing assertions)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[2]


def test_every_variant_timed_on_fp32_and_int8(tmp_path: Path) -> None:
    out = tmp_path / "ov.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "openvino_settings.py"), "--image-size", "96", "--threads", "1",
         "--repeats", "2", "--warmup", "1", "--width-mult", "0.35", "--num-classes", "4", "--json", str(out)],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    variants = result["settings"]["variants"]
    assert variants["shipped (LATENCY, threads, f32)"] == {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    windows = ["onnxruntime: spinning off", *variants]
    assert set(result["ratio_to_onnxruntime"]) == {f"{w} {q}" for w in windows for q in ("fp32", "int8")}
    assert set(result["core_ms"]) == set(result["ratio_to_onnxruntime"]) | {
        f"{w} {q}: onnxruntime in the same window" for w in windows for q in ("fp32", "int8")}
    for stats in result["core_ms"].values():
        assert stats["n"] == 2 and 0 < stats["median"] <= stats["p90"]
    for name, ratio in result["ratio_to_onnxruntime"].items():
        ort = result["core_ms"][f"{name}: onnxruntime in the same window"]["median"]
        assert ratio == pytest.approx(result["core_ms"][name]["median"] / ort)
