"""benchmarks/gpu.py's wiring, run on the CPU at batch 2: the JSON's keys and that every figure is a
positive number (no timing assertions; the GPU figures themselves need a GPU)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_steps_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("benchmark_gpu", ROOT / "benchmarks" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    out = tmp_path / "gpu.json"
    result = gpu.main(["--device", "cpu", "--train-batch", "2", "--infer-batch", "2", "--repeats", "1",
                       "--json", str(out)])
    assert json.loads(out.read_text()) == result == json.loads(capsys.readouterr().out)
    assert result["device"] == "cpu"
    assert set(result["train_images_per_s"]) == {"ours", "torchvision"}
    assert all(v > 0 for v in result["train_images_per_s"].values())
    assert set(result["inference_latency"]) == {"batch1", "batch2"}
    for row in result["inference_latency"].values():
        assert set(row) == {"ours_ms", "torchvision_ms"} and all(v > 0 for v in row.values())
