"""benchmarks/eval_backends.py on a small case: both backends give the same twelve numbers."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("faster_coco_eval")
ROOT = Path(__file__).resolve().parents[2]


def test_backends_agree_on_a_small_synthetic_case(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("benchmark_eval_backends", ROOT / "benchmarks" / "eval_backends.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    stats = bench.main(["--images", "40", "--detections-per-image", "20", "--repeats", "1"])
    assert set(stats) == {"pycocotools", "faster-coco-eval"}
    assert len(stats["pycocotools"]) == 12
    assert 0.0 < stats["pycocotools"][0] < 1.0  # jittered true boxes and random ones: a middling AP
    assert stats["faster-coco-eval"] == pytest.approx(stats["pycocotools"], abs=1e-12)
    assert "speed-up" in capsys.readouterr().out
