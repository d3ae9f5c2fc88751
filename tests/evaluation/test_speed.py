"""detector.evaluation.speed: timing summaries and the score calibration, against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detector.evaluation.speed import calibrate_scores, candidate_count, class_convs, round_robin, timing_summary


def test_timing_summary_nearest_rank_p90() -> None:
    summary = timing_summary([i / 1000 for i in range(1, 11)])  # 1..10 ms
    assert summary == {"median": pytest.approx(5.5), "p90": pytest.approx(9.0), "min": pytest.approx(1.0), "n": 10}


def test_round_robin_runs_every_task_each_round_and_times_the_last() -> None:
    calls: list[tuple[str, int]] = []
    stats = round_robin({"a": lambda r: calls.append(("a", r)), "b": lambda r: calls.append(("b", r))},
                        rounds=3, warmup=2)
    assert calls == [(name, r) for r in range(5) for name in ("a", "b")]
    assert stats["a"]["n"] == stats["b"]["n"] == 3


def test_candidate_count_by_hand() -> None:
    # One image, two anchors, background + two classes. Softmax of [0, 0, 0] is 1/3 each.
    logits = torch.zeros(1, 2, 3)
    assert candidate_count(logits, shift=0.0, threshold=0.3, topk=10) == 4  # 2 anchors x 2 classes
    assert candidate_count(logits, shift=0.0, threshold=0.3, topk=1) == 2  # at most one per class
    # Background + ln 2: scores 1/4 each, under the threshold.
    assert candidate_count(logits, shift=math.log(2), threshold=0.3, topk=10) == 0


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cls_heads = nn.ModuleList([nn.Sequential(nn.Conv2d(4, 3 * 2, 1))])  # 2 anchors x 3 classes


class _Tiny(nn.Module):
    """One level, 2 anchors per location, 3 classes: the layout :func:`class_convs` reads."""

    def __init__(self) -> None:
        super().__init__()
        self.head = _Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head.cls_heads[0](x)  # [B, 6, H, W]
        return out.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 3)  # [B, A, 3]


def test_calibration_reaches_the_target_and_moves_only_the_background_bias() -> None:
    torch.manual_seed(0)
    model, x = _Tiny(), torch.randn(4, 4, 8, 8)
    before = class_convs(model)[0].bias.detach().clone()
    result = calibrate_scores(model, lambda: model(x).detach(), num_classes=3, target=20.0, logit_std=2.0,
                              threshold=0.2, topk=1000)
    assert result["candidates_per_image"] == pytest.approx(20.0, abs=1.0)
    # The shifted bias gives that count again, but for float rounding at the bisection's edge (one pair of
    # the 4 images is 0.25).
    assert candidate_count(model(x).detach(), 0.0, 0.2, 1000) == pytest.approx(result["candidates_per_image"], abs=0.3)
    shifted = class_convs(model)[0].bias.detach() - before
    assert torch.allclose(shifted[0::3], torch.full((2,), result["background_bias_shift"]))
    assert torch.count_nonzero(shifted[1::3]) == 0 and torch.count_nonzero(shifted[2::3]) == 0


def test_figures_ratios_by_hand_with_and_without_the_optional_paths() -> None:
    """Whole-path ratios to torchvision, OpenVINO over ONNX Runtime on the same file, and ExecuTorch
    reported only when it was timed."""
    from detector.evaluation.speed import figures

    def s(ms: float) -> dict:
        return {"median": ms, "p90": ms, "min": ms, "n": 1}

    medians = {"ours_eager": (50, 55), "onnx_fp32": (15, 18), "onnx_int8": (8, 10), "openvino_fp32": (12, 15),
               "openvino_int8": (6, 8), "torchvision_eager": (90, 100)}
    stats = {f"{name}.{part}": s(v) for name, (core, whole) in medians.items()
             for part, v in (("core", core), ("whole", whole))}
    stats.update({"stages.ours.preprocess": s(0.7), "stages.ours.postprocess_network_pixels": s(1.5),
                  "stages.torchvision.to_tensor_and_transform": s(3.0), "postprocess.torchvision": s(6.0)})
    result = figures(stats)
    assert "executorch_int8" not in result["latency_ms"] and "executorch_int8" not in result["ratios"]
    assert result["ratios"]["openvino_int8"] == pytest.approx(8 / 100)
    assert result["core_ratios"]["onnx_fp32"] == pytest.approx(15 / 90)
    assert result["openvino_vs_onnxruntime"]["openvino_int8"] == {"core": pytest.approx(6 / 8),
                                                                 "whole": pytest.approx(8 / 10)}
    stats.update({"executorch_int8.core": s(5), "executorch_int8.whole": s(7)})
    result = figures(stats)
    assert result["ratios"]["executorch_int8"] == pytest.approx(7 / 100)
    assert result["latency_ms"]["executorch_int8"]["core"]["median"] == 5
