"""CPU inference speed: ours (PyTorch eager, ONNX Runtime fp32 and int8) against torchvision's
``ssdlite320_mobilenet_v3_large``, in one process, on the same decoded images.

    python benchmarks/latency.py --preset ssdlite_mobilenetv2 --image-size 320 --threads 2 --batch 1 --json cpu.json
    python benchmarks/latency.py --checkpoint runs/x/checkpoints/best.ckpt --json cpu.json

What is timed (image decoding excluded; every path starts from ``HxWx3`` uint8 RGB arrays):

- **core**: the network alone on an already normalised ``[B, 3, S, S]`` batch (ours: ``SSDLite.forward``
  of the conv-BN-fused model, or the ONNX session; torchvision: ``backbone`` + ``head``).
- **whole**: array in, detections in the image's pixels out. Ours: ``Predictor.predict_batch`` (cv2
  resize, normalise, network, decode, top-k, NMS, rescale). torchvision: ``uint8 -> float 0..1`` tensor,
  then ``model(images)`` (its transform: normalise, bilinear resize; backbone, head, anchors,
  ``postprocess_detections``, ``transform.postprocess``).
- **post-processing alone**: ours (``PostProcessor``, boxes rescaled to the original size) against
  torchvision's ``postprocess_detections`` + ``transform.postprocess``, on the *same* raw outputs
  (our network's, with our anchors) for the same images.

Timing: after ``--warmup`` rounds, ``--repeats`` rounds; each round runs every measurement once on
the same batch of images (round-robin, so a load spike on a shared machine hits all of them
alike); median and p90 in milliseconds. Post-processing alone gets rounds of its own (ours and
torchvision's alternating, ``4 x --repeats``), so neither pays for the caches and sleeping threads a
network run leaves behind. torchvision gets the same threads, score threshold, NMS IoU, per-class
top-k and detection cap as ours, and the same input size.

Random weights would make the comparison meaningless: near-uniform softmax scores put almost every
(anchor, class) pair above the 0.01 threshold and NMS cost explodes. So, for a ``--preset`` (and for
torchvision's random-weight reference always), the background bias of the class heads' last
convolutions is raised, the same way for both models, until the images give ``--candidates``
(anchor, class) pairs above the score threshold per image on average (what a trained detector
shows: a few hundred). With ``--checkpoint`` our trained weights are left untouched and torchvision
is calibrated to our measured candidate count. The biases and the resulting counts are in the JSON.

``--width-mult`` and ``--num-classes`` (presets only) and ``--repeats`` / ``--warmup`` exist for quick
runs (tests); the published figures use the defaults.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# On a shared machine, OpenMP threads that spin while waiting for work fight other processes for the
# cores: 2 threads measured up to 10x slower than 1. Passive waiting must be chosen before torch loads
# OpenMP; it applies to both models alike (set OMP_WAIT_POLICY yourself to override).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import ssdlite320_mobilenet_v3_large


from detector import build_model
from detector.checkpoint import load_checkpoint
from detector.data.io import load_image
from detector.inference import Predictor
from detector.labels import LabelMap
from detector.modeling.ssdlite import PRESETS, SSDLite

ROOT = Path(__file__).resolve().parents[1]

# Real photos, reached relative to the repository (the shared data folder beside it).
IMAGE_DIRS = (
    ROOT.parent / "shared" / "data" / "udacity-vehicle-detection" / "test_images",
    ROOT.parent / "shared" / "data" / "raccoon" / "images",
)
MAX_IMAGES = 8


# --- inputs -----------------------------------------------------------------------------------

def load_images(count: int = MAX_IMAGES) -> tuple[list[np.ndarray], str]:
    """Decoded ``HxWx3`` uint8 RGB photos (the first folder that has some), else synthetic frames."""
    for folder in IMAGE_DIRS:
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
            if files:
                rel = os.path.relpath(folder, ROOT)
                return [load_image(p) for p in files], rel
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        frame = cv2.GaussianBlur(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), (0, 0), 8)
        frames.append(np.ascontiguousarray(frame))
    return frames, "synthetic 1280x720 frames"


# --- timing -----------------------------------------------------------------------------------

def summary(times_s: Sequence[float]) -> dict[str, float]:
    """Median and p90 (nearest rank) in milliseconds."""
    ms = sorted(t * 1000.0 for t in times_s)
    p90 = ms[min(len(ms) - 1, int(np.ceil(0.9 * len(ms))) - 1)]
    return {"median": statistics.median(ms), "p90": p90, "min": ms[0], "n": len(ms)}


def round_robin(tasks: dict[str, Callable[[int], Any]], rounds: int, warmup: int) -> dict[str, dict[str, float]]:
    """Run every task once per round (task(i) works on batch i); summaries of the timed rounds."""
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for r in range(warmup + rounds):
        for name, task in tasks.items():
            start = time.perf_counter()
            task(r)
            elapsed = time.perf_counter() - start
            if r >= warmup:
                times[name].append(elapsed)
    return {name: summary(t) for name, t in times.items()}


# --- models -----------------------------------------------------------------------------------

def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(fn: Callable[[Tensor], Any], size: tuple[int, int]) -> int:
    """Multiply-adds of one ``[1, 3, H, W]`` forward (``torch.utils.flop_counter``: FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn(torch.zeros(1, 3, *size))
    return int(counter.get_total_flops() // 2)


def class_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The last 1x1 convolution of every class-head level (its channel ``a * C + c`` is anchor a, class c)."""
    if isinstance(model, SSDLite):
        levels = model.head.cls_heads
    else:
        levels = model.head.classification_head.module_list
    return [level[-1] for level in levels]


def candidate_count(cls_logits: Tensor, shift: float, threshold: float, topk: int) -> float:
    """Mean number of (anchor, class) pairs per image that reach NMS: score above the threshold,
    at most ``topk`` per class; with ``shift`` added to the background logit."""
    logits = cls_logits.clone()
    logits[..., 0] += shift
    scores = logits.softmax(-1)[..., 1:]
    above = (scores > threshold).sum(dim=1).clamp(max=topk)  # [B, K]
    return float(above.sum(dim=1).float().mean())


def calibrate_background(cls_logits: Tensor, target: float, threshold: float, topk: int) -> float:
    """The background-logit shift (>= 0) that brings the mean candidate count down to ``target``."""
    if candidate_count(cls_logits, 0.0, threshold, topk) <= target:
        return 0.0
    low, high = 0.0, 1.0
    while candidate_count(cls_logits, high, threshold, topk) > target:
        low, high = high, high * 2
        if high > 1e4:
            break
    for _ in range(40):
        mid = 0.5 * (low + high)
        if candidate_count(cls_logits, mid, threshold, topk) > target:
            low = mid
        else:
            high = mid
    return high


def shift_background(model: nn.Module, shift: float, num_classes: int) -> None:
    """Add ``shift`` to the background channel's bias of every class-head level."""
    with torch.no_grad():
        for conv in class_convs(model):
            conv.bias[0::num_classes] += shift


def build_ours(args: argparse.Namespace) -> tuple[SSDLite, LabelMap]:
    if args.checkpoint:
        model, label_map = load_checkpoint(args.checkpoint, map_location="cpu")
        if tuple(model.image_size) != (args.image_size, args.image_size):
            from detector.deploy.onnx_export import resize_model  # the same weights, anchors rebuilt for the new size
            model = resize_model(model, args.image_size)
        return model.eval(), label_map
    torch.manual_seed(0)
    model = build_model(args.preset, num_classes=args.num_classes, width_mult=args.width_mult,
                        image_size=args.image_size)
    k = args.num_classes - 1
    label_map = LabelMap(category_ids=list(range(1, k + 1)), names=[f"class{i}" for i in range(1, k + 1)])
    return model.eval(), label_map


def build_torchvision(ours: SSDLite, image_size: int) -> nn.Module:
    """Random-weight ``ssdlite320_mobilenet_v3_large`` with our post-processing settings and input size."""
    pp = ours.post_processor
    torch.manual_seed(0)
    model = ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=ours.num_classes,
        score_thresh=pp.score_threshold, nms_thresh=pp.nms_threshold,
        detections_per_img=pp.max_detections, topk_candidates=pp.topk_candidates,
    )
    model.transform.min_size = (image_size,)
    model.transform.max_size = image_size
    model.transform.fixed_size = (image_size, image_size)
    return model.eval()


def torchvision_core(model: nn.Module) -> Callable[[Tensor], dict[str, Tensor]]:
    def core(x: Tensor) -> dict[str, Tensor]:
        return model.head(list(model.backbone(x).values()))
    return core


def to_float_tensor(image: np.ndarray) -> Tensor:
    """What torchvision's detectors take: ``FloatTensor[3, H, W]`` in 0..1."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)


# --- ONNX -------------------------------------------------------------------------------------

def ort_session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Like OMP_WAIT_POLICY=PASSIVE for PyTorch: idle ORT threads sleep instead of spinning.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def export_onnx_models(model: SSDLite, label_map: LabelMap, folder: Path, batch: int,
                       calibration: Sequence[np.ndarray]) -> tuple[dict[str, Path | None], list[str]]:
    """fp32 (raw outputs; our PostProcessor decodes) and int8 graphs, where the export code exists."""
    paths: dict[str, Path | None] = {"onnx_fp32": None, "onnx_int8": None}
    notes: list[str] = []
    try:
        from detector.deploy.onnx_export import export_onnx
    except ImportError as err:
        notes.append(f"onnx_fp32/onnx_int8: no ONNX export available ({err})")
        return paths, notes
    fp32 = folder / "model.onnx"
    export_onnx(model, label_map, fp32, dynamic_batch=batch != 1, with_nms=False, verify=False)
    paths["onnx_fp32"] = fp32
    try:
        from detector.deploy import quantize
    except ImportError as err:
        notes.append(f"onnx_int8: no quantization available ({err})")
        return paths, notes
    int8 = folder / "model.int8.onnx"
    try:
        quantize_file(quantize, fp32, int8, calibration)
        paths["onnx_int8"] = int8
    except Exception as err:  # noqa: BLE001 - an int8 failure must not lose the other figures
        notes.append(f"onnx_int8: quantization failed ({type(err).__name__}: {err})")
    return paths, notes


def quantize_file(quantize: Any, fp32: Path, int8: Path, calibration: Sequence[np.ndarray]) -> None:
    """Static int8 through ``detector.deploy.quantize.quantize_onnx``, calibrated on the benchmark's images
    (written next to the model as PNG files: the quantizer reads files)."""
    folder = int8.parent / "calibration"
    folder.mkdir(exist_ok=True)
    files = []
    for i, image in enumerate(calibration):
        files.append(folder / f"{i:03d}.png")
        cv2.imwrite(str(files[-1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    quantize.quantize_onnx(fp32, int8, files, calibration_count=None)


# --- the benchmark ----------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import onnxruntime

    return {
        "cpu": cpu, "cores": os.cpu_count(), "load_average_before": list(os.getloadavg()),
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    info = machine()
    images, source = load_images()
    size = (args.image_size, args.image_size)
    batches = [[images[(i * args.batch + j) % len(images)] for j in range(args.batch)] for i in range(len(images))]
    pick = lambda r: r % len(batches)  # noqa: E731

    ours, label_map = build_ours(args)
    theirs = build_torchvision(ours, args.image_size)
    pp = ours.post_processor
    core_theirs = torchvision_core(theirs)
    notes: list[str] = []

    # Size figures (before any fusion: the model as defined).
    models = {
        "ours": {"name": f"SSDLite-MobileNetV2 ({ours.config.get('neck')}, width {ours.config.get('width_mult')})",
                 "params": count_params(ours), "macs": count_macs(ours, size),
                 "anchors": int(ours.anchors.shape[0])},
        "torchvision": {"name": "ssdlite320_mobilenet_v3_large", "params": count_params(theirs),
                        "macs": count_macs(core_theirs, size)},
    }

    # Realistic score distributions (see the module docstring).
    predictor = Predictor.from_model(ours, label_map, fuse=True)  # fuses conv+BN in place
    inputs = [predictor.preprocess(b) for b in batches]
    with torch.inference_mode():
        tv_inputs = [theirs.transform([to_float_tensor(a) for a in b])[0].tensors for b in batches]
    threshold, topk = pp.score_threshold, pp.topk_candidates

    def logits_of(model: Callable[[Tensor], Any], xs: list[Tensor], key: Any) -> Tensor:
        with torch.inference_mode():
            return torch.cat([model(x)[key] for x in xs])

    calibrated: dict[str, dict[str, float]] = {}
    targets = [("torchvision", theirs, lambda: logits_of(core_theirs, tv_inputs, "cls_logits"))]
    if args.checkpoint:
        target = candidate_count(logits_of(ours, inputs, 0), 0.0, threshold, topk)
    else:
        target = float(args.candidates)
        targets.insert(0, ("ours", ours, lambda: logits_of(ours, inputs, 0)))
    for name, model, logits_fn in targets:
        spread = float(logits_fn().std())
        with torch.no_grad():
            for conv in class_convs(model):
                conv.weight.mul_(args.logit_std / spread)
        logits = logits_fn()
        shift = calibrate_background(logits, target, threshold, topk)
        shift_background(model, shift, ours.num_classes)
        calibrated[name] = {"weight_scale": args.logit_std / spread, "background_bias_shift": shift,
                            "candidates_per_image": candidate_count(logits, shift, threshold, topk)}
    if args.checkpoint:
        calibrated["ours"] = {"weight_scale": 1.0, "background_bias_shift": 0.0, "candidates_per_image": target}
    calibration = {
        "method": ("class logits of the random-weight model(s) scaled to std {s}, then the background bias "
                   "raised until the images give the target candidate count per image").format(s=args.logit_std),
        "target_candidates_per_image": target,
        **calibrated,
    }

    # Same raw outputs for both post-processors: our network's, with our anchors.
    with torch.inference_mode():
        raw = [ours(x) for x in inputs]
    orig_sizes = [[tuple(a.shape[:2]) for a in b] for b in batches]
    anchors = ours.anchors
    tv_anchors = [anchors] * args.batch
    runner_pp = predictor.runner.post_processor

    def pp_ours(r: int) -> Any:
        cls_logits, bbox_regression = raw[pick(r)]
        return runner_pp(cls_logits, bbox_regression, anchors, ours.image_size, orig_sizes[pick(r)])

    def pp_theirs(r: int) -> Any:
        cls_logits, bbox_regression = raw[pick(r)]
        dets = theirs.postprocess_detections({"cls_logits": cls_logits, "bbox_regression": bbox_regression},
                                             tv_anchors, [ours.image_size] * args.batch)
        return theirs.transform.postprocess(dets, [ours.image_size] * args.batch, orig_sizes[pick(r)])

    with torch.inference_mode():
        same = all(
            len(a["scores"]) == len(b["scores"]) and torch.allclose(a["scores"], b["scores"])
            for r in range(len(batches)) for a, b in zip(pp_ours(r), pp_theirs(r))
        )
    detections = statistics.mean(len(d["scores"]) for r in range(len(batches)) for d in pp_ours(r))

    tasks: dict[str, Callable[[int], Any]] = {}
    tasks["ours_eager.core"] = lambda r: ours(inputs[pick(r)])
    tasks["ours_eager.whole"] = lambda r: predictor.predict_batch(batches[pick(r)])
    tasks["torchvision_eager.core"] = lambda r: core_theirs(tv_inputs[pick(r)])
    tasks["torchvision_eager.whole"] = lambda r: theirs([to_float_tensor(a) for a in batches[pick(r)]])
    # Post-processing alone runs in its own rounds (below): inside the network rounds, whichever ran
    # right after a network would pay for the caches and thread pool the network left behind.
    pp_tasks: dict[str, Callable[[int], Any]] = {"postprocess.ours": pp_ours, "postprocess.torchvision": pp_theirs}
    # Where the whole path's time goes (stages of the paths above, timed separately).
    tasks["stages.ours.preprocess"] = lambda r: predictor.preprocess(batches[pick(r)])
    tasks["stages.ours.postprocess_network_pixels"] = lambda r: runner_pp(*raw[pick(r)], anchors, ours.image_size)
    tasks["stages.torchvision.to_tensor_and_transform"] = (
        lambda r: theirs.transform([to_float_tensor(a) for a in batches[pick(r)]]))

    backends: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_paths, onnx_notes = export_onnx_models(ours, label_map, Path(tmp), args.batch,
                                                    [a for b in batches for a in b])
        notes.extend(onnx_notes)
        for name, path in onnx_paths.items():
            if path is None:
                continue
            from detector.deploy.onnx_runtime import load_onnx_predictor

            onnx_predictor = load_onnx_predictor(path, session_options=ort_session_options(args.threads),
                                                 num_threads=args.threads)
            backends[name] = onnx_predictor
            arrays = [x.numpy() for x in inputs]
            session, input_name = onnx_predictor.runner.session, onnx_predictor.runner.input_name
            tasks[f"{name}.core"] = (lambda r, s=session, n=input_name: s.run(None, {n: arrays[pick(r)]}))
            tasks[f"{name}.whole"] = (lambda r, p=onnx_predictor: p.predict_batch(batches[pick(r)]))

        with torch.inference_mode():
            stats = round_robin(tasks, args.repeats, args.warmup)
            stats.update(round_robin(pp_tasks, 4 * args.repeats, args.warmup))

    latency: dict[str, Any] = {}
    for path_name in ("ours_eager", "onnx_fp32", "onnx_int8", "torchvision_eager"):
        if f"{path_name}.whole" in stats:
            latency[path_name] = {"core": stats[f"{path_name}.core"], "whole": stats[f"{path_name}.whole"]}
        else:
            latency[path_name] = None
    reference = stats["torchvision_eager.whole"]["median"]
    reference_core = stats["torchvision_eager.core"]["median"]

    def whole(name: str) -> float | None:
        return latency[name]["whole"]["median"] if latency[name] else None

    def core(name: str) -> float | None:
        return latency[name]["core"]["median"] if latency[name] else None

    ratios = {"eager": ratio(whole("ours_eager"), reference), "onnx_fp32": ratio(whole("onnx_fp32"), reference),
              "onnx_int8": ratio(whole("onnx_int8"), reference)}
    core_ratios = {"eager": ratio(core("ours_eager"), reference_core),
                   "onnx_fp32": ratio(core("onnx_fp32"), reference_core),
                   "onnx_int8": ratio(core("onnx_int8"), reference_core)}
    postprocess = {"ours": stats["postprocess.ours"], "torchvision": stats["postprocess.torchvision"],
                   "same_detections": same, "detections_per_image": detections}
    stages = {
        "ours_eager": {
            "preprocess": stats["stages.ours.preprocess"]["median"],
            "network": core("ours_eager"),
            "postprocess": stats["stages.ours.postprocess_network_pixels"]["median"],
            "whole": whole("ours_eager"),
        },
        "torchvision_eager": {
            "to_tensor_and_transform": stats["stages.torchvision.to_tensor_and_transform"]["median"],
            "network": reference_core,
            "postprocess": stats["postprocess.torchvision"]["median"],
            "whole": reference,
        },
    }
    info["load_average_after"] = list(os.getloadavg())
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python benchmarks/latency.py " + " ".join(args.argv),
        "machine": info,
        "settings": {
            "checkpoint": args.checkpoint, "preset": None if args.checkpoint else args.preset,
            "image_size": args.image_size, "threads": args.threads, "batch": args.batch,
            "repeats": args.repeats, "warmup": args.warmup,
            "images": source, "num_images": len(images), "image_shapes": sorted({a.shape[:2] for a in images}),
            "score_threshold": pp.score_threshold, "nms_threshold": pp.nms_threshold,
            "topk_candidates": pp.topk_candidates, "max_detections": pp.max_detections,
            "calibration": calibration,
        },
        "models": models,
        "latency_ms": latency,
        "postprocess_ms": postprocess,
        "stages_ms": stages,
        "core_ratios": core_ratios,
        "ratios": ratios,
        "postprocess_speedup": ratio(stats["postprocess.torchvision"]["median"], stats["postprocess.ours"]["median"]),
        "notes": notes,
    }


def print_report(result: dict[str, Any]) -> None:
    s = result["settings"]
    print(f"{result['machine']['cpu']}, {s['threads']} threads, batch {s['batch']}, {s['image_size']}px, "
          f"{s['repeats']} rounds; images: {s['images']}")
    for name, m in result["models"].items():
        print(f"  {name:12s} {m['params'] / 1e6:6.2f} M params  {m['macs'] / 1e9:6.3f} G multiply-adds")
    print(f"  {'path':20s} {'core med':>9s} {'p90':>8s} {'whole med':>10s} {'p90':>8s} {'ratio':>7s}")
    for name, lat in result["latency_ms"].items():
        if lat is None:
            print(f"  {name:20s} (not available)")
            continue
        key = {"ours_eager": "eager"}.get(name, name)
        r = result["ratios"].get(key)
        print(f"  {name:20s} {lat['core']['median']:9.2f} {lat['core']['p90']:8.2f} "
              f"{lat['whole']['median']:10.2f} {lat['whole']['p90']:8.2f} {'' if r is None else f'{r:7.3f}'}")
    p = result["postprocess_ms"]
    print(f"  post-processing: ours {p['ours']['median']:.3f} ms, torchvision {p['torchvision']['median']:.3f} ms "
          f"-> {result['postprocess_speedup']:.1f}x (same detections: {p['same_detections']})")
    for note in result["notes"]:
        print(f"  note: {note}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", default=None, help="a trained checkpoint (weights used as they are)")
    source.add_argument("--preset", default="ssdlite_mobilenetv2", choices=sorted(PRESETS))
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", default=None, help="write every figure here")
    parser.add_argument("--repeats", type=int, default=50, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    parser.add_argument("--candidates", type=float, default=300.0,
                        help="presets: (anchor, class) pairs above the score threshold per image after calibration")
    parser.add_argument("--logit-std", type=float, default=2.0,
                        help="random weights: spread of the class logits before the background bias is set")
    parser.add_argument("--width-mult", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--num-classes", type=int, default=91, help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    print_report(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
