"""Run the detector over a video and write an annotated, browser-playable H.264 MP4.

    python tools/demo_video.py --checkpoint CKPT --input VIDEO --output OUT.mp4
        [--score-threshold 0.4] [--classes car,truck,bus,person] [--backend torch|onnx|openvino]
        [--track] [--max-frames N] [--device cpu|cuda] [--slice [--slice-size S|HxW]] [--letterbox]

VIDEO is a video file, a folder of still frames (played at --fps), or a webcam index (0, 1...).
Decoding, detection, drawing and encoding run frame by frame, so memory does not grow with the
video's length, and overlap: decoding runs ahead and drawing + encoding behind on their own threads
(``--no-pipeline``: one after another); the output has the input's size and frame rate. An overlay shows per-frame model
time and running FPS. ``--track`` gives each object a stable id (SORT: Kalman + IoU matching).
At the end a summary (frames, mean model ms per frame, end-to-end FPS) is printed and written,
with every frame's detections, to OUT.json beside OUT.mp4.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any
from pathlib import Path

from detector.checkpoint import resolve_device
from detector.inference import BACKENDS, Predictor
from detector.slicing import FrameView, add_view_arguments, view_options
from detector.video.io import VideoReadError
from detector.video.pipeline import DetectFn, run_video
from detector.video.tracking import Tracker


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="model checkpoint, zoo:NAME, exported .onnx or ExecuTorch .pte")
    parser.add_argument("--input", required=True, help="video file, folder of frames, or webcam index")
    parser.add_argument("--output", type=Path, required=True, help="annotated MP4 (OUT.json is written beside it)")
    parser.add_argument("--score-threshold", type=float, default=0.4, help="default: %(default)s")
    parser.add_argument("--classes", help="comma-separated class names to keep, e.g. car,truck,bus,person")
    parser.add_argument("--backend", choices=tuple(BACKENDS), default="torch",
                        help="torch (any model file), onnx (ONNX Runtime) or openvino, for an exported .onnx "
                             "(default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device for --backend torch: cpu, cuda, cuda:1, auto (default: %(default)s)")
    parser.add_argument("--track", action="store_true", help="give objects stable ids across frames")
    parser.add_argument("--max-age", type=int, default=15, help="frames a lost track is kept (with --track)")
    parser.add_argument("--min-hits", type=int, default=3, help="hits before a track gets an id (with --track)")
    parser.add_argument("--max-frames", type=int, help="stop after N frames (required for endless webcams)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of a frames folder (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--encoder-preset", default="superfast",
                        choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"),
                        help="libx264 speed / file size trade-off; ultrafast encodes 1280x720 in about 40%% of "
                             "veryfast's time for files twice the size (default: %(default)s)")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="decode, detect, draw and encode one after another on one thread (by default "
                             "decoding runs ahead and drawing + encoding behind on their own threads)")
    add_view_arguments(parser)
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be >= 1")
    return args


def load_predictor(checkpoint: Path, backend: str, device: str, **options: object) -> Predictor:
    """:class:`detector.inference.Predictor` of a model file (``options``: its slicing and letterbox;
    unset, the view the model records); a clear exit on a file it cannot load."""
    try:
        return Predictor.load(checkpoint, backend, device=resolve_device(device) if backend == "torch" else "cpu",
                              **options)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        # e.g. a checkpoint that needs code to unpickle (refused), or an ONNX file without our metadata
        raise SystemExit(f"error: {err}") from err


def build_detect_fn(checkpoint: Path, backend: str, device: str, **options: object) -> DetectFn:
    """``frame -> {"boxes", "scores", "labels", "names"}`` (:func:`load_predictor`'s ``predict``)."""
    return load_predictor(checkpoint, backend, device, **options).predict


def view_record(args: argparse.Namespace, view: FrameView) -> dict[str, Any]:
    """What ran and how it saw each frame, for the summary (whole frame, or tiles: ``--slice`` or the
    model's own view; ``slice_min_aspect``: frames at least that wide are sliced)."""
    slicing = view.slicing
    return {"checkpoint": str(args.checkpoint), "backend": args.backend, "letterbox": view.letterbox,
            "slice": slicing is not None,
            **({"slice_size": list(slicing.tile) if slicing.tile else None, "slice_overlap": slicing.overlap,
                "slice_full_frame": slicing.full_frame, "slice_placement": slicing.placement,
                "slice_min_aspect": view.slice_min_aspect}
               if slicing is not None else {})}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    try:
        options = view_options(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    predictor = load_predictor(args.checkpoint, args.backend, args.device, **options)
    tracker = Tracker(max_age=args.max_age, min_hits=args.min_hits) if args.track else None
    try:
        summary = run_video(args.input, args.output, predictor.predict, classes=classes, score_threshold=args.score_threshold,
                            track=args.track, max_frames=args.max_frames, tracker=tracker, fps=args.fps,
                            progress=not args.no_progress, view=view_record(args, predictor.view),
                            pipelined=not args.no_pipeline, preset=args.encoder_preset)
    except VideoReadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("frames", "mean_model_ms", "end_to_end_fps", "pipelined", "view")}))
    print(f"wrote {summary['output']['path']} ({summary['output']['width']}x{summary['output']['height']} "
          f"@ {summary['output']['fps']:g} fps, {summary['output']['codec']}) and {summary['output']['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
