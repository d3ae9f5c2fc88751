"""Speed on real footage: the driving model per backend on wide frames (whole and sliced), a profile of
the video pipeline's stages, and end-to-end FPS on the repository clip, pipelined and serial.

    python benchmarks/footage.py [--threads 2] [--repeats 3] [--frames DIR] [--json footage.json]

The driving model (``zoo:carla_ssdlite_mobilenet_v2_pretrained``, ``make demo``'s) is exported once into a
temporary folder (ONNX fp32 with a dynamic batch, and int8 calibrated on every other frame of the clip,
as ``make demo`` does). Then, on one process:

- **wide frames**: ``Predictor.predict`` per frame (array in, detections in frame pixels out), whole
  frame and ``--slice`` (SAHI's tiles plus the whole frame, all views in one batch), for torch eager,
  ONNX Runtime fp32 and int8, OpenVINO int8; on ``--frames`` (default: the KITTI frames of
  ``../shared/data/kitti-dev/image_2``, 1242x375, where they exist; else the clip's frames);
- **stages** of ``tools/demo_video.py`` on the 1280x720 clip, each timed alone per frame: decoding
  (PyAV), the model (int8 ONNX, whole frame), tracking, drawing (boxes and overlay), encoding (libx264
  at three presets);
- **end to end**: ``run_video`` on the clip with tracking, serial with the old encoder preset, and
  pipelined (decoding ahead, drawing and encoding behind on their own threads) at three presets, per
  backend and view.

Medians over ``--repeats`` passes (the per-frame figures: the median frame of every pass pooled).
Times depend on the machine and its load: compare figures of one run.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as benchmarks/latency.py

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from detector.data.io import load_image  # noqa: E402
from detector.evaluation.speed import cpu_name  # noqa: E402
from detector.inference import Predictor  # noqa: E402
from detector.slicing import Slicing  # noqa: E402
from detector.video.draw import draw_detections, draw_overlay  # noqa: E402
from detector.video.io import VideoFileSource, VideoWriter  # noqa: E402
from detector.video.pipeline import run_video  # noqa: E402
from detector.video.tracking import Tracker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "data" / "samples" / "dashcam" / "test_video.mp4"
KITTI = ROOT.parent / "shared" / "data" / "kitti-dev" / "image_2"
MODEL = "carla_ssdlite_mobilenet_v2_pretrained"
THRESHOLD = 0.4  # the demo's
# (label, pipelined, libx264 preset): before this benchmark existed (serial, veryfast), the pipeline
# alone, and what tools/demo_video.py and make demo run now.
RUNS = (("serial, veryfast (before)", False, "veryfast"), ("pipelined, veryfast", True, "veryfast"),
        ("pipelined, superfast (demo_video default)", True, "superfast"),
        ("pipelined, ultrafast (make demo)", True, "ultrafast"))


def clip_frames() -> list[np.ndarray]:
    with VideoFileSource(CLIP) as source:
        return [frame.image for frame in source]


def export(folder: Path, frames: list[np.ndarray]) -> tuple[Path, Path]:
    from PIL import Image

    calibration = folder / "calibration"
    calibration.mkdir()
    for i, frame in enumerate(frames[::2]):
        Image.fromarray(frame).save(calibration / f"{i:03d}.jpg", quality=95)
    fp32 = folder / "driving.onnx"
    subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), "--checkpoint", f"zoo:{MODEL}", "--output",
                    str(fp32), "--dynamic-batch", "--int8", "--calibration-images", str(calibration)], check=True,
                   stdout=subprocess.DEVNULL)
    return fp32, folder / "driving.int8.onnx"


def per_frame_ms(fn: Callable[[np.ndarray], object], frames: Sequence[np.ndarray], repeats: int) -> float:
    """Median over ``repeats`` passes of each pass's median per-frame time (one warm-up frame first)."""
    fn(frames[0])
    medians = []
    for _ in range(repeats):
        times = []
        for frame in frames:
            start = time.perf_counter()
            fn(frame)
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return statistics.median(medians) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=Path, help="wide frames to time (default: kitti-dev where present)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clip = clip_frames()
    folder = args.frames or (KITTI if KITTI.is_dir() else None)
    wide = [load_image(p) for p in sorted(folder.iterdir())[:20]] if folder else clip[:20]
    wide_name = f"{folder} ({wide[0].shape[1]}x{wide[0].shape[0]}, {len(wide)} frames)" if folder else "the clip"
    results: dict[str, object] = {"cpu": cpu_name(), "threads": args.threads, "wide_frames": wide_name}
    with tempfile.TemporaryDirectory(prefix="footage-") as tmp:
        fp32, int8 = export(Path(tmp), clip)
        backends = {
            "torch eager": (f"zoo:{MODEL}", "torch"),
            "ONNX Runtime fp32": (fp32, "onnx"),
            "ONNX Runtime int8": (int8, "onnx"),
            "OpenVINO int8": (int8, "openvino"),
        }
        wide_ms: dict[str, dict[str, float]] = {}
        for name, (path, backend) in backends.items():
            wide_ms[name] = {}
            for view, slicing in (("whole", None), ("sliced", Slicing())):
                options = {"num_threads": args.threads} if backend != "torch" else {}
                predictor = Predictor.load(path, backend, slicing=slicing, **options)
                wide_ms[name][view] = per_frame_ms(predictor.predict, wide, args.repeats)
        results["wide_ms"] = wide_ms

        predictor = Predictor.load(int8, "onnx", num_threads=args.threads)
        detections = [predictor.predict(frame) for frame in clip]
        stages: dict[str, float] = {}

        def decode() -> None:
            with VideoFileSource(CLIP) as source:
                for _ in source:
                    pass
        start = time.perf_counter()
        for _ in range(args.repeats):
            decode()
        stages["decode"] = (time.perf_counter() - start) / (args.repeats * len(clip)) * 1000
        stages["model (int8 ONNX, whole frame)"] = per_frame_ms(predictor.predict, clip, args.repeats)
        tracker = Tracker()
        index = {id(frame): i for i, frame in enumerate(clip)}

        def track(frame: np.ndarray) -> None:
            det = detections[index[id(frame)]]
            keep = det["scores"] >= THRESHOLD
            tracker.update(det["boxes"][keep], det["scores"][keep], det["labels"][keep])
        stages["tracking"] = per_frame_ms(track, clip, args.repeats)

        def draw(frame: np.ndarray) -> np.ndarray:
            det = detections[index[id(frame)]]
            keep = det["scores"] >= THRESHOLD
            image = draw_detections(frame, det["boxes"][keep], det["scores"][keep],
                                    [n for n, k in zip(det["names"], keep) if k])
            return draw_overlay(image, ["model 0.0 ms", "FPS 0.0"])
        stages["drawing"] = per_frame_ms(draw, clip, args.repeats)
        height, width = clip[0].shape[:2]
        for preset in ("veryfast", "superfast", "ultrafast"):
            with VideoWriter(Path(tmp) / "encode.mp4", width, height, 25, preset=preset) as writer:
                stages[f"encoding (libx264 {preset})"] = per_frame_ms(writer.write, clip, args.repeats)
        results["stages_ms"] = stages

        end_to_end: dict[str, dict[str, float]] = {}
        for name, (path, backend) in backends.items():
            for view, slicing in (("whole", None), ("sliced", Slicing())):
                options = {"num_threads": args.threads} if backend != "torch" else {}
                predictor = Predictor.load(path, backend, slicing=slicing, **options)
                for label, pipelined, preset in RUNS:
                    fps = []
                    for _ in range(args.repeats):
                        summary = run_video(CLIP, Path(tmp) / "out.mp4", predictor.predict, score_threshold=THRESHOLD,
                                            track=True, progress=False, pipelined=pipelined, preset=preset)
                        fps.append(summary["end_to_end_fps"])
                    end_to_end.setdefault(f"{name}, {view}", {})[label] = statistics.median(fps)
        results["end_to_end_fps"] = end_to_end

    print(f"{results['cpu']}, {args.threads} threads, medians of {args.repeats} passes")
    print(f"\nper frame, array in, detections out, on {wide_name} (ms)")
    print("| backend | whole frame | sliced |")
    print("|---|---:|---:|")
    for name, views in wide_ms.items():
        print(f"| {name} | {views['whole']:.1f} | {views['sliced']:.1f} |")
    print("\nstages of tools/demo_video.py on the 1280x720 clip, each alone (ms per frame)")
    print("| stage | ms |")
    print("|---|---:|")
    for stage, ms in stages.items():
        print(f"| {stage} | {ms:.1f} |")
    print("\nend to end on the clip with tracking (FPS)")
    print("| model, view | " + " | ".join(label for label, _, _ in RUNS) + " |")
    print("|---|" + "---:|" * len(RUNS))
    for key, fps in end_to_end.items():
        print(f"| {key} | " + " | ".join(f"{fps[label]:.1f}" for label, _, _ in RUNS) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
