#!/usr/bin/env python
"""Which OpenVINO compile settings make the exported detector fastest: the network core of the same
fp32 and int8 (QDQ) files under each setting, next to ONNX Runtime, in one process, round-robin.

    python benchmarks/openvino_settings.py --image-size 320 --threads 2 --json ov_settings.json

The model is the default preset (width 1.0, 91 classes) with random weights, exported as
``benchmarks/latency.py`` exports it (raw outputs, batch 1) and quantized on 8 frames of the shipped
dashcam clip. Settings compared (each is :func:`detector.deploy.openvino_runtime.compile_settings`
plus the entries shown): the shipped one (``LATENCY`` hint, ``--threads`` threads, f32), the
throughput hint, no thread count (OpenVINO's own choice), CPU pinning off, and 1 thread; ONNX
Runtime with its default options and with spinning off (idle threads sleep).
Each variant is timed in a window of its own next to ONNX Runtime's default sessions (``ratio_to_onnxruntime``);
``--repeats`` rounds after ``--warmup``; medians and p90 in milliseconds.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as benchmarks/latency.py, for the PyTorch export

import argparse  # noqa: E402
import sys  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detector import build_model  # noqa: E402
from detector.deploy.onnx_export import export_onnx  # noqa: E402
from detector.deploy.onnx_runtime import create_session  # noqa: E402
from detector.deploy.openvino_runtime import OpenVinoSession, compile_model, compile_settings  # noqa: E402
from detector.deploy.preprocess import ImagePreprocessor  # noqa: E402
from detector.deploy.quantize import quantize_onnx  # noqa: E402
from detector.evaluation import speed  # noqa: E402
from detector.files import atomic_write_text  # noqa: E402
from detector.labels import LabelMap  # noqa: E402
from detector.video.io import open_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DASHCAM = ROOT / "data" / "samples" / "dashcam" / "test_video.mp4"


def variants(threads: int) -> dict[str, dict[str, Any]]:
    """Name -> OpenVINO compile settings."""
    return {
        "shipped (LATENCY, threads, f32)": compile_settings(threads),
        "THROUGHPUT hint": compile_settings(threads, performance_hint="THROUGHPUT"),
        "no thread count": compile_settings(None),
        "pinning off": compile_settings(threads, extra={"ENABLE_CPU_PINNING": False}),
        "1 thread": compile_settings(1),
    }


def no_spinning() -> Any:
    """ONNX Runtime options whose idle intra-op threads sleep instead of spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def frames(count: int = 8) -> list[np.ndarray]:
    with open_source(DASHCAM) as clip:
        images = [frame.image for frame in clip]
    return [images[i] for i in np.linspace(0, len(images) - 1, count).round().astype(int)]


def export(folder: Path, args: argparse.Namespace, images: list[np.ndarray]) -> dict[str, Path]:
    torch.manual_seed(0)
    model = build_model("ssdlite_mobilenetv2", num_classes=args.num_classes, image_size=args.image_size,
                        width_mult=args.width_mult).eval()
    k = args.num_classes - 1
    labels = LabelMap(category_ids=list(range(1, k + 1)), names=[f"class{i}" for i in range(1, k + 1)])
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    export_onnx(model, labels, fp32, with_nms=False, verify=False)
    calibration = []
    for i, image in enumerate(images):
        calibration.append(folder / f"calibration_{i}.png")
        cv2.imwrite(str(calibration[-1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    quantize_onnx(fp32, int8, calibration, calibration_count=None)
    return {"fp32": fp32, "int8": int8}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Each variant in a window of its own: its two compiled files timed round-robin with ONNX Runtime's
    two sessions, then released (compiled models kept side by side would each hold, and pin, a
    thread pool on the same cores and slow one another)."""
    torch.set_num_threads(args.threads)
    images = frames()
    stats: dict[str, dict[str, float]] = {}
    versus: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = export(Path(tmp), args, images)
        prep = ImagePreprocessor(args.image_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        inputs = [prep([image]).numpy() for image in images]
        windows: dict[str, Any] = {"onnxruntime: spinning off": no_spinning(), **variants(args.threads)}
        for label, settings in windows.items():
            tasks: speed.Tasks = {}
            for quant, path in files.items():
                session = create_session(path, num_threads=args.threads)
                name = session.get_inputs()[0].name
                tasks[f"onnxruntime {quant}"] = lambda r, s=session, n=name: s.run(None, {n: inputs[r % len(inputs)]})
                if label.startswith("onnxruntime"):
                    other = create_session(path, num_threads=args.threads, session_options=settings)
                else:
                    other = OpenVinoSession(compile_model(path, settings))
                tasks[f"{quant}"] = lambda r, s=other, n=name: s.run(None, {n: inputs[r % len(inputs)]})
            window = speed.round_robin(tasks, args.repeats, args.warmup)
            for quant in files:
                stats[f"{label} {quant}"] = window[quant]
                stats[f"{label} {quant}: onnxruntime in the same window"] = window[f"onnxruntime {quant}"]
                versus[f"{label} {quant}"] = window[quant]["median"] / window[f"onnxruntime {quant}"]["median"]
            del tasks  # releases the compiled models and their threads before the next window
    return {"command": "python benchmarks/openvino_settings.py " + " ".join(args.argv),
            "machine": {"cpu": speed.cpu_name(), "cores": os.cpu_count(), "load_average": list(os.getloadavg())},
            "settings": {"image_size": args.image_size, "threads": args.threads, "repeats": args.repeats,
                         "variants": variants(args.threads)},
            "core_ms": stats, "ratio_to_onnxruntime": versus}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--width-mult", type=float, default=1.0, help=argparse.SUPPRESS)  # quick runs (tests)
    parser.add_argument("--num-classes", type=int, default=91, help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    print(f"{result['machine']['cpu']}, {args.threads} threads, {args.image_size}px, {args.repeats} rounds")
    print(f"  {'variant':44s} {'median':>8s} {'p90':>8s} {'ORT median':>11s} {'/ ORT':>6s}")
    for name, ratio in result["ratio_to_onnxruntime"].items():
        own, ort = result["core_ms"][name], result["core_ms"][f"{name}: onnxruntime in the same window"]
        print(f"  {name:44s} {own['median']:8.2f} {own['p90']:8.2f} {ort['median']:11.2f} {ratio:6.2f}")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
