"""Measuring speed and size fairly: round-robin timing, parameter and multiply-add counts, and the
score calibration that makes random-weight detectors behave like trained ones in post-processing.

``benchmarks/latency.py`` is built from these; they know no particular model beyond the two SSD head
layouts :func:`class_convs` reads (this project's ``SSDLite`` and torchvision's ``SSD``).
"""
from __future__ import annotations

import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Bench", "calibrate", "calibrate_scores", "candidate_count", "class_convs", "count_macs", "count_params",
           "cpu_name", "figures", "model_sizes", "network_tasks", "postprocess_tasks", "round_robin", "timing_summary",
           "to_float_tensor", "torchvision_core"]


def timing_summary(times_s: Sequence[float]) -> dict[str, float]:
    """``{"median", "p90" (nearest rank), "min"}`` in milliseconds and ``"n"``, of times in seconds.

    >>> timing_summary([0.001, 0.003, 0.002])
    {'median': 2.0, 'p90': 3.0, 'min': 1.0, 'n': 3}
    """
    ms = sorted(t * 1000.0 for t in times_s)
    p90 = ms[min(len(ms) - 1, int(np.ceil(0.9 * len(ms))) - 1)]
    return {"median": statistics.median(ms), "p90": p90, "min": ms[0], "n": len(ms)}


def round_robin(tasks: dict[str, Callable[[int], Any]], rounds: int, warmup: int) -> dict[str, dict[str, float]]:
    """Run every task once per round (``task(i)`` works on input ``i``); a :func:`timing_summary` per
    task over the ``rounds`` timed rounds after ``warmup`` untimed ones.

    Round-robin, so a load spike on a shared machine hits every task alike.
    """
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for r in range(warmup + rounds):
        for name, task in tasks.items():
            start = time.perf_counter()
            task(r)
            elapsed = time.perf_counter() - start
            if r >= warmup:
                times[name].append(elapsed)
    return {name: timing_summary(t) for name, t in times.items()}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(fn: Callable[[Tensor], Any], size: tuple[int, int]) -> int:
    """Multiply-adds of one ``[1, 3, H, W]`` forward (``torch.utils.flop_counter``: FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn(torch.zeros(1, 3, *size))
    return int(counter.get_total_flops() // 2)


def cpu_name() -> str:
    """The CPU model as ``lscpu`` names it, else what ``platform`` knows."""
    name = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


# --- score calibration --------------------------------------------------------------------------
# Random weights give near-uniform softmax scores, so almost every (anchor, class) pair passes the
# score threshold and NMS cost explodes. Raising the background bias of the class heads' last
# convolutions, the same way for every model, brings the count of candidates that reach NMS down to
# what a trained detector shows (a few hundred per image).

def class_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The last 1x1 convolution of every class-head level (its channel ``a * C + c`` is anchor a, class c):
    ``head.cls_heads`` of an ``SSDLite``, ``head.classification_head.module_list`` of torchvision's SSD."""
    head = model.head
    levels = head.cls_heads if hasattr(head, "cls_heads") else head.classification_head.module_list
    return [level[-1] for level in levels]


def candidate_count(cls_logits: Tensor, shift: float, threshold: float, topk: int) -> float:
    """Mean number of (anchor, class) pairs per image that reach NMS: score above ``threshold``, at
    most ``topk`` per class; with ``shift`` added to the background logit.

    Args:
        cls_logits: Tensor[B, A, C], class 0 the background.
    """
    logits = cls_logits.clone()
    logits[..., 0] += shift
    scores = logits.softmax(-1)[..., 1:]
    above = (scores > threshold).sum(dim=1).clamp(max=topk)  # [B, K]
    return float(above.sum(dim=1).float().mean())


def _background_shift(cls_logits: Tensor, target: float, threshold: float, topk: int) -> float:
    """The background-logit shift (>= 0) that brings the mean candidate count down to ``target``
    (doubling, then 40 bisection steps)."""
    if candidate_count(cls_logits, 0.0, threshold, topk) <= target:
        return 0.0
    low, high = 0.0, 1.0
    while candidate_count(cls_logits, high, threshold, topk) > target and high <= 1e4:
        low, high = high, high * 2
    for _ in range(40):
        mid = 0.5 * (low + high)
        if candidate_count(cls_logits, mid, threshold, topk) > target:
            low = mid
        else:
            high = mid
    return high


def calibrate_scores(model: nn.Module, logits_fn: Callable[[], Tensor], num_classes: int, target: float,
                     logit_std: float, threshold: float, topk: int) -> dict[str, float]:
    """Scale the class logits of a random-weight ``model`` to std ``logit_std``, then raise its
    background bias until ``logits_fn()`` (Tensor[B, A, C] over the benchmark's images) gives
    ``target`` candidates per image. Changes ``model`` in place.

    Returns:
        ``{"weight_scale", "background_bias_shift", "candidates_per_image"}`` (the count reached).
    """
    scale = logit_std / float(logits_fn().std())
    with torch.no_grad():
        for conv in class_convs(model):
            conv.weight.mul_(scale)
    logits = logits_fn()
    shift = _background_shift(logits, target, threshold, topk)
    with torch.no_grad():
        for conv in class_convs(model):
            conv.bias[0::num_classes] += shift
    return {"weight_scale": scale, "background_bias_shift": shift,
            "candidates_per_image": candidate_count(logits, shift, threshold, topk)}


# --- the latency comparison: ours against torchvision's SSD on the same images ------------------

Tasks = dict[str, Callable[[int], Any]]


def to_float_tensor(image: np.ndarray) -> Tensor:
    """What torchvision's detectors take: ``FloatTensor[3, H, W]`` in 0..1."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)


def torchvision_core(model: nn.Module) -> Callable[[Tensor], dict[str, Tensor]]:
    """The network alone of a torchvision SSD: normalised ``[B, 3, S, S]`` -> ``{"cls_logits", "bbox_regression"}``."""
    def core(x: Tensor) -> dict[str, Tensor]:
        return model.head(list(model.backbone(x).values()))
    return core


class Bench:
    """Ours (an ``SSDLite`` and its ``Predictor``, conv-BN fused) and torchvision's SSD, the image
    batches, and each model's network inputs for them; round ``r`` works on batch ``pick(r)``.

    Args:
        ours: the ``SSDLite`` the ``predictor`` runs (``Predictor.from_model(ours, ...)``).
        theirs: a torchvision ``SSD`` (:func:`detector.training.reference.reference_model`).
        images: ``HxWx3`` uint8 RGB arrays, cycled into ``len(images)`` batches of ``batch``.
    """

    def __init__(self, ours: nn.Module, theirs: nn.Module, predictor: Any, images: Sequence[np.ndarray],
                 batch: int) -> None:
        self.ours, self.theirs, self.predictor, self.batch = ours, theirs, predictor, batch
        self.core_theirs = torchvision_core(theirs)
        self.batches = [[images[(i * batch + j) % len(images)] for j in range(batch)] for i in range(len(images))]
        self.inputs = [self.predictor.preprocess(b) for b in self.batches]
        with torch.inference_mode():
            self.tv_inputs = [self.theirs.transform([to_float_tensor(a) for a in b])[0].tensors for b in self.batches]
        self.orig_sizes = [[tuple(a.shape[:2]) for a in b] for b in self.batches]

    def pick(self, r: int) -> int:
        return r % len(self.batches)

    def logits(self, which: str) -> Tensor:
        """Class logits ``[N, A, C]`` of every batch, from ``"ours"`` or ``"torchvision"``."""
        with torch.inference_mode():
            if which == "ours":
                return torch.cat([self.ours(x)[0] for x in self.inputs])
            return torch.cat([self.core_theirs(x)["cls_logits"] for x in self.tv_inputs])


def model_sizes(ours: nn.Module, theirs: nn.Module, size: tuple[int, int]) -> dict[str, Any]:
    """Parameters and multiply-adds of ``SSDLite`` ``ours`` and torchvision's SSD ``theirs`` at an
    ``(H, W)`` input, as defined (call before anything fuses them)."""
    return {
        "ours": {"name": f"SSDLite-MobileNetV2 ({ours.config.get('neck')}, width {ours.config.get('width_mult')})",
                 "params": count_params(ours), "macs": count_macs(ours, size), "anchors": int(ours.anchors.shape[0])},
        "torchvision": {"name": "ssdlite320_mobilenet_v3_large", "params": count_params(theirs),
                        "macs": count_macs(torchvision_core(theirs), size)},
    }


def calibrate(bench: Bench, trained: bool, candidates: float, logit_std: float) -> dict[str, Any]:
    """Give the random-weight models a trained detector's candidate count per image: ``candidates``,
    or, when ours is ``trained`` (left as it is), the count ours gives. The report's ``calibration``."""
    pp = bench.ours.post_processor
    threshold, topk = pp.score_threshold, pp.topk_candidates
    models = {"torchvision": bench.theirs}
    if trained:
        target = candidate_count(bench.logits("ours"), 0.0, threshold, topk)
    else:
        target = float(candidates)
        models = {"ours": bench.ours, **models}
    calibrated = {name: calibrate_scores(model, lambda n=name: bench.logits(n), bench.ours.num_classes, target,
                                         logit_std, threshold, topk) for name, model in models.items()}
    if trained:
        calibrated["ours"] = {"weight_scale": 1.0, "background_bias_shift": 0.0, "candidates_per_image": target}
    method = ("class logits of the random-weight model(s) scaled to std {s}, then the background bias "
              "raised until the images give the target candidate count per image").format(s=logit_std)
    return {"method": method, "target_candidates_per_image": target, **calibrated}


def postprocess_tasks(bench: Bench) -> tuple[Tasks, dict[str, Any]]:
    """Ours and torchvision's post-processing on the same raw outputs (our network's, our anchors),
    and whether they agree on the detections."""
    with torch.inference_mode():
        raw = [bench.ours(x) for x in bench.inputs]
    anchors, size, batch = bench.ours.anchors, bench.ours.image_size, bench.batch
    levels = bench.ours.anchor_levels
    post = bench.predictor.runner.post_processor

    def ours(r: int) -> Any:
        return post(*raw[bench.pick(r)], anchors, size, bench.orig_sizes[bench.pick(r)], anchor_levels=levels)

    def theirs(r: int) -> Any:
        cls_logits, bbox_regression = raw[bench.pick(r)]
        dets = bench.theirs.postprocess_detections({"cls_logits": cls_logits, "bbox_regression": bbox_regression},
                                                   [anchors] * batch, [size] * batch)
        return bench.theirs.transform.postprocess(dets, [size] * batch, bench.orig_sizes[bench.pick(r)])

    rounds = range(len(bench.batches))
    with torch.inference_mode():
        same = all(len(a["scores"]) == len(b["scores"]) and torch.allclose(a["scores"], b["scores"])
                   for r in rounds for a, b in zip(ours(r), theirs(r)))
        detections = statistics.mean(len(d["scores"]) for r in rounds for d in ours(r))
    tasks = {"postprocess.ours": ours, "postprocess.torchvision": theirs,
             "stages.ours.postprocess_network_pixels": lambda r: post(*raw[bench.pick(r)], anchors, size,
                                                                      anchor_levels=levels)}
    return tasks, {"same_detections": same, "detections_per_image": detections}


def network_tasks(bench: Bench) -> Tasks:
    """Core and whole paths of both eager models, and the stages of the whole paths."""
    b, pick = bench.batches, bench.pick
    return {
        "ours_eager.core": lambda r: bench.ours(bench.inputs[pick(r)]),
        "ours_eager.whole": lambda r: bench.predictor.predict_batch(b[pick(r)]),
        "torchvision_eager.core": lambda r: bench.core_theirs(bench.tv_inputs[pick(r)]),
        "torchvision_eager.whole": lambda r: bench.theirs([to_float_tensor(a) for a in b[pick(r)]]),
        "stages.ours.preprocess": lambda r: bench.predictor.preprocess(b[pick(r)]),
        "stages.torchvision.to_tensor_and_transform": lambda r: bench.theirs.transform(
            [to_float_tensor(a) for a in b[pick(r)]]),
    }


# The exported files' paths, each timed as core and whole: ONNX Runtime and OpenVINO on the same
# fp32 and int8 (QDQ) files.
EXPORTED_PATHS = ("onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8")
# Reported only when timed (benchmarks/latency.py --executorch).
OPTIONAL_PATHS = ("executorch_fp32", "executorch_int8")


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def figures(stats: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The report's ``latency_ms``, ``ratios``, ``core_ratios`` and ``stages_ms`` from the timings."""
    optional = [name for name in OPTIONAL_PATHS if f"{name}.whole" in stats]
    latency = {name: ({"core": stats[f"{name}.core"], "whole": stats[f"{name}.whole"]}
                      if f"{name}.whole" in stats else None)
               for name in ("ours_eager", *EXPORTED_PATHS, *optional, "torchvision_eager")}
    median = {(name, part): latency[name][part]["median"] if latency[name] else None
              for name in latency for part in ("core", "whole")}
    ours = {"eager": "ours_eager", **{name: name for name in (*EXPORTED_PATHS, *optional)}}
    stages = {
        "ours_eager": {"preprocess": stats["stages.ours.preprocess"]["median"],
                       "network": median["ours_eager", "core"],
                       "postprocess": stats["stages.ours.postprocess_network_pixels"]["median"],
                       "whole": median["ours_eager", "whole"]},
        "torchvision_eager": {"to_tensor_and_transform": stats["stages.torchvision.to_tensor_and_transform"]["median"],
                              "network": median["torchvision_eager", "core"],
                              "postprocess": stats["postprocess.torchvision"]["median"],
                              "whole": median["torchvision_eager", "whole"]},
    }
    # OpenVINO against ONNX Runtime on the same file.
    versus_ort = {f"openvino_{q}": {part: ratio(median[f"openvino_{q}", part], median[f"onnx_{q}", part])
                                    for part in ("core", "whole")} for q in ("fp32", "int8")}
    return {
        "latency_ms": latency,
        "stages_ms": stages,
        "core_ratios": {k: ratio(median[v, "core"], median["torchvision_eager", "core"]) for k, v in ours.items()},
        "ratios": {k: ratio(median[v, "whole"], median["torchvision_eager", "whole"]) for k, v in ours.items()},
        "openvino_vs_onnxruntime": versus_ort,
    }
