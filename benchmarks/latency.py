"""CPU inference speed: ours (PyTorch eager; ONNX Runtime and OpenVINO, fp32 and int8, on the same
exported files) against torchvision's ``ssdlite320_mobilenet_v3_large``, in one process, on the same
decoded images.

    python benchmarks/latency.py --preset ssdlite_mobilenetv2 --image-size 320 --threads 2 --batch 1 --json cpu.json
    python benchmarks/latency.py --checkpoint runs/x/checkpoints/best.ckpt --json cpu.json

What is timed (image decoding excluded; every path starts from ``HxWx3`` uint8 RGB arrays):

- **core**: the network alone on an already normalised ``[B, 3, S, S]`` batch (ours: ``SSDLite.forward``
  of the conv-BN-fused model, or the ONNX Runtime session / OpenVINO compiled model; torchvision:
  ``backbone`` + ``head``). OpenVINO runs with :func:`detector.deploy.openvino_runtime.compile_settings`
  (latency hint, ``--threads``, f32 precision); ``openvino_vs_onnxruntime`` gives its ratios to ONNX
  Runtime on the same file.
- **whole**: array in, detections in the image's pixels out. Ours: ``Predictor.predict_batch``.
  torchvision: ``uint8 -> float 0..1`` tensor, then ``model(images)`` (its transform, network,
  ``postprocess_detections``, ``transform.postprocess``).
- **post-processing alone**: ours (``PostProcessor``, boxes rescaled to the original size) against
  torchvision's ``postprocess_detections`` + ``transform.postprocess``, on the *same* raw outputs
  (our network's, with our anchors), in rounds of their own (``4 x --repeats``).

After ``--warmup`` rounds, ``--repeats`` rounds run every measurement once on the same batch
(:func:`detector.evaluation.speed.round_robin`); median and p90 in milliseconds. torchvision gets the
same threads, score threshold, NMS IoU, per-class top-k, detection cap and input size as ours.
Random weights are calibrated to give ``--candidates`` (anchor, class) pairs above the score
threshold per image (:func:`detector.evaluation.speed.calibrate_scores`); with ``--checkpoint`` our
weights stay as trained and torchvision is calibrated to our count. The images: 8 frames of the
dashcam clip in ``data/samples/dashcam/`` (the published figures used the 6 Udacity stills of the same
camera: ``--images DIR``). ``--width-mult``, ``--num-classes`` (presets only), ``--repeats`` and
``--warmup`` exist for quick runs (tests).
"""
from __future__ import annotations

import os

# On a shared machine, OpenMP threads that spin while waiting for work fight other processes for the
# cores: 2 threads measured up to 10x slower than 1. Passive waiting must be chosen before torch loads
# OpenMP; it applies to both models alike (set OMP_WAIT_POLICY yourself to override).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

from detector import build_model  # noqa: E402
from detector.checkpoint import load_checkpoint  # noqa: E402
from detector.data.io import list_images, load_image  # noqa: E402
from detector.evaluation import speed  # noqa: E402
from detector.files import atomic_write_text  # noqa: E402
from detector.inference import Predictor  # noqa: E402
from detector.labels import LabelMap  # noqa: E402
from detector.modeling.ssdlite import PRESETS, SSDLite  # noqa: E402
from detector.training.reference import reference_model  # noqa: E402
from detector.video.io import open_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DASHCAM = ROOT / "data" / "samples" / "dashcam" / "test_video.mp4"
MAX_IMAGES = 8


def load_images(folder: Path | None, count: int = MAX_IMAGES) -> tuple[list[np.ndarray], str]:
    """``count`` decoded ``HxWx3`` uint8 RGB images: the first of ``folder``, else frames spread over
    the shipped dashcam clip."""
    if folder is not None:
        files = list_images(folder)[:count]
        if not files:
            raise SystemExit(f"--images {folder}: no image found")
        return [load_image(p) for p in files], str(folder)
    with open_source(DASHCAM) as clip:
        frames = [frame.image for frame in clip]
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in picks], f"{DASHCAM.relative_to(ROOT)} ({count} of {len(frames)} frames)"


def build_models(args: argparse.Namespace) -> tuple[SSDLite, LabelMap, nn.Module]:
    """Ours (trained, or a preset with random weights) and torchvision's with our post-processing settings."""
    if args.checkpoint:
        ours, label_map = load_checkpoint(args.checkpoint, map_location="cpu")
        if tuple(ours.image_size) != (args.image_size, args.image_size):
            from detector.deploy.onnx_export import (
                resize_model,  # the same weights, anchors rebuilt for the new size
            )
            ours = resize_model(ours, args.image_size)
    else:
        torch.manual_seed(0)
        ours = build_model(args.preset, num_classes=args.num_classes, width_mult=args.width_mult,
                           image_size=args.image_size)
        k = args.num_classes - 1
        label_map = LabelMap(category_ids=list(range(1, k + 1)), names=[f"class{i}" for i in range(1, k + 1)])
    pp = ours.post_processor
    torch.manual_seed(0)
    theirs = reference_model(ours.num_classes, args.image_size, score_thresh=pp.score_threshold,
                             nms_thresh=pp.nms_threshold, detections_per_img=pp.max_detections,
                             topk_candidates=pp.topk_candidates)
    return ours.eval(), label_map, theirs.eval()


def onnx_tasks(bench: speed.Bench, label_map: LabelMap, args: argparse.Namespace,
               folder: Path) -> tuple[speed.Tasks, list[str]]:
    """Core and whole paths of the fp32 and int8 exports (written into ``folder``), where they build."""
    from detector.deploy.onnx_export import export_onnx
    from detector.deploy.quantize import quantize_onnx

    fp32, int8, notes = folder / "model.onnx", folder / "model.int8.onnx", []
    export_onnx(bench.ours, label_map, fp32, dynamic_batch=args.batch != 1, with_nms=False, verify=False)
    paths = {"onnx_fp32": fp32}
    # The quantizers read files: the benchmark's own images, written beside the model.
    calibration = [folder / f"calibration_{i:03d}.png" for i in range(sum(map(len, bench.batches)))]
    for path, image in zip(calibration, (a for b in bench.batches for a in b)):
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    try:
        quantize_onnx(fp32, int8, calibration, calibration_count=None)
        paths["onnx_int8"] = int8
    except Exception as err:  # noqa: BLE001 - an int8 failure must not lose the other figures
        notes.append(f"onnx_int8: quantization failed ({type(err).__name__}: {err})")
    tasks: speed.Tasks = {}
    arrays = [x.numpy() for x in bench.inputs]
    runtimes = {"onnx": ("onnxruntime", ort_session_options(args.threads))}
    try:
        import openvino  # noqa: F401

        runtimes["openvino"] = ("openvino", None)
    except ImportError:
        notes.append("openvino: not installed (pip install openvino)")
    for prefix, (runtime, options) in runtimes.items():
        for quant, path in paths.items():
            name = f"{prefix}_{quant.split('_')[1]}"
            predictor = Predictor.from_onnx(path, runtime=runtime, session_options=options, num_threads=args.threads)
            session, input_name = predictor.runner.session, predictor.runner.input_name
            tasks[f"{name}.core"] = lambda r, s=session, n=input_name: s.run(None, {n: arrays[bench.pick(r)]})
            tasks[f"{name}.whole"] = lambda r, p=predictor: p.predict_batch(bench.batches[bench.pick(r)])
    if args.executorch:
        executorch, more = executorch_tasks(bench, label_map, args, folder, calibration)
        tasks.update(executorch)
        notes += more
    return tasks, notes


def executorch_tasks(bench: speed.Bench, label_map: LabelMap, args: argparse.Namespace, folder: Path,
                     calibration: list[Path]) -> tuple[speed.Tasks, list[str]]:
    """Core and whole paths of the fp32 and int8 ExecuTorch programs (XNNPACK; batch 1 only)."""
    if args.batch != 1:
        return {}, ["executorch: programs take batch 1; not timed at --batch > 1"]
    try:
        from detector.deploy.executorch_export import export_executorch
        from detector.deploy.executorch_runtime import load_executorch_runner
    except ImportError as err:
        return {}, [f"executorch: not installed ({err})"]
    tasks: speed.Tasks = {}
    for quant in ("fp32", "int8"):
        path = folder / f"model.{quant}.pte"
        export_executorch(bench.ours, label_map, path, int8=quant == "int8", calibration_images=calibration,
                          calibration_count=None, verify=False)
        runner = load_executorch_runner(path)
        predictor = Predictor(runner, label_map)
        tasks[f"executorch_{quant}.core"] = lambda r, m=runner.method: m.execute([bench.inputs[bench.pick(r)]])
        tasks[f"executorch_{quant}.whole"] = lambda r, p=predictor: p.predict_batch(bench.batches[bench.pick(r)])
    return tasks, []


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


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime

    try:
        openvino_version = version("openvino")
    except PackageNotFoundError:
        openvino_version = None
    return {
        "cpu": speed.cpu_name(), "cores": os.cpu_count(), "load_average_before": list(os.getloadavg()),
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__,
        "openvino": openvino_version, "opencv": cv2.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, calibrate, time every path, and return the report (keys: see the tests)."""
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    info = machine()
    images, source = load_images(args.images)
    ours, label_map, theirs = build_models(args)
    models = speed.model_sizes(ours, theirs, (args.image_size, args.image_size))  # before conv+BN fusion
    bench = speed.Bench(ours, theirs, Predictor.from_model(ours, label_map, fuse=True), images, args.batch)
    calibration = speed.calibrate(bench, bool(args.checkpoint), args.candidates, args.logit_std)
    pp_tasks, agreement = speed.postprocess_tasks(bench)
    tasks = speed.network_tasks(bench)
    tasks["stages.ours.postprocess_network_pixels"] = pp_tasks.pop("stages.ours.postprocess_network_pixels")
    with tempfile.TemporaryDirectory() as tmp:
        exported, notes = onnx_tasks(bench, label_map, args, Path(tmp))
        with torch.inference_mode():
            stats = speed.round_robin({**tasks, **exported}, args.repeats, args.warmup)
            # Post-processing alone in rounds of its own: right after a network, it would pay for the
            # caches and thread pool the network left behind.
            stats.update(speed.round_robin(pp_tasks, 4 * args.repeats, args.warmup))
    info["load_average_after"] = list(os.getloadavg())
    pp, timings = ours.post_processor, speed.figures(stats)
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
        "latency_ms": timings["latency_ms"],
        "postprocess_ms": {"ours": stats["postprocess.ours"], "torchvision": stats["postprocess.torchvision"],
                           **agreement},
        "stages_ms": timings["stages_ms"],
        "core_ratios": timings["core_ratios"],
        "ratios": timings["ratios"],
        "openvino_vs_onnxruntime": timings["openvino_vs_onnxruntime"],
        "postprocess_speedup": speed.ratio(stats["postprocess.torchvision"]["median"],
                                           stats["postprocess.ours"]["median"]),
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
        r = result["ratios"].get({"ours_eager": "eager"}.get(name, name))
        print(f"  {name:20s} {lat['core']['median']:9.2f} {lat['core']['p90']:8.2f} "
              f"{lat['whole']['median']:10.2f} {lat['whole']['p90']:8.2f} {'' if r is None else f'{r:7.3f}'}")
    for name, versus in result["openvino_vs_onnxruntime"].items():
        if versus["whole"] is not None:
            print(f"  {name} / ONNX Runtime on the same file: core {versus['core']:.2f}, whole {versus['whole']:.2f}")
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
    parser.add_argument("--images", type=Path, default=None,
                        help="time on the first 8 images of this folder (default: 8 frames of the dashcam clip)")
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
    parser.add_argument("--executorch", action="store_true",
                        help="also time ExecuTorch programs (XNNPACK, fp32 and PT2E int8; exporting takes minutes)")
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
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
