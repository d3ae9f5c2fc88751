"""COCO box metrics of a model or of an existing detections file, exactly as pycocotools computes them.

Run a model over a COCO-format set (writes the detections, then evaluates)::

    python tools/eval.py --checkpoint CKPT --images DIR --annotations FILE [--output metrics.json]
        [--detections-out dets.json] [--batch-size N] [--backend pycocotools|faster-coco-eval]
        [--backend torch|onnx|openvino] [--score-threshold F] [--max-detections N] [--plots DIR]
        [--slice [--slice-size S|HxW] [--slice-overlap 0.2]] [--letterbox]

``--backend`` names the scorer (pycocotools, the default, or faster-coco-eval) and, for an exported
``.onnx`` checkpoint, the runtime (``onnx``: ONNX Runtime, the default; ``openvino``); give it twice
for both, e.g. ``--backend openvino --backend faster-coco-eval``.

Evaluate an existing COCO results file (no model)::

    python tools/eval.py --detections dets.json --annotations FILE [--output metrics.json]
        [--plots DIR [--images DIR]]

KITTI's official 2D AP as well (``--metric kitti``; annotations converted with ``convert_dataset.py --from
kitti``, which keeps KITTI's types, truncation and occlusion; the model's class names mapped to KITTI's
Car / Pedestrian / Cyclist with ``--class-map``, e.g. ``vehicle=Car person=Pedestrian``)::

    python tools/eval.py --checkpoint CKPT --images DIR --annotations kitti.json --metric kitti \
        [--class-map vehicle=Car bike=Cyclist] [--kitti-recall-points 40|11]

Prints the 12-line COCO summary and a per-class table and writes ``metrics.json`` (keys in
:mod:`detector.evaluation.coco`). ``--plots DIR`` adds precision-recall curves and, when the images are
known, a gallery of the worst and best images. The work is :func:`detector.evaluation.evaluate.evaluate_on_dataset`;
with ``--slice`` or ``--letterbox`` (wide frames: :mod:`detector.slicing`), or when the model records such
a view of its own (``--no-slice`` turns that off), the model runs through the Predictor on each image at its own size (:func:`detector.evaluation.evaluate.evaluate_predictor_on_dataset`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from detector.evaluation.coco import BACKENDS, CocoEvalRun, print_report, run_coco_eval
from detector.files import atomic_write_text
from detector.slicing import FrameView, add_view_arguments, view_options

# The model backends of the other tools (detector.inference.BACKENDS; not imported here, to keep
# ``--detections`` free of torch).
MODEL_BACKENDS: tuple[str, ...] = ("torch", "onnx", "openvino")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="model checkpoint (.ckpt), zoo:NAME or exported model (.onnx, .pte) to run (needs --images)")
    source.add_argument("--detections", type=Path, help="existing COCO results JSON to evaluate")
    parser.add_argument("--annotations", type=Path, required=True, help="COCO ground-truth JSON")
    parser.add_argument("--images", type=Path, help="images folder (required with --checkpoint; enables the gallery)")
    parser.add_argument("--output", type=Path, default=Path("metrics.json"), help="metrics JSON (default: %(default)s)")
    parser.add_argument("--detections-out", type=Path,
                        help="where --checkpoint writes its COCO results (default: detections.json beside --output)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1'...")
    parser.add_argument("--backend", choices=BACKENDS + MODEL_BACKENDS, action="append", default=[],
                        help="scorer (pycocotools, default; faster-coco-eval) and/or the runtime of an exported "
                             ".onnx (onnx = ONNX Runtime, default; openvino); repeat for both")
    parser.add_argument("--score-threshold", type=float, help="keep detections above this score (default: the model's)")
    parser.add_argument("--max-detections", type=int, help="detections per image after NMS (default: the model's)")
    parser.add_argument("--plots", type=Path, help="folder for precision-recall curves and the image gallery")
    parser.add_argument("--class-map", nargs="+", metavar="NAME[,NAME...]=CATEGORY",
                        help="the model's class names -> the annotations' category names where they differ, e.g. "
                             "'car,truck,bus=vehicle' (classes are matched by name, case and '_' ignored; the "
                             "classes both sides know are scored)")
    parser.add_argument("--metric", choices=("coco", "kitti"), default="coco",
                        help="coco (default): COCO's metrics; kitti: KITTI's 2D AP (easy / moderate / hard) too")
    parser.add_argument("--kitti-recall-points", type=int, choices=(40, 11), default=40,
                        help="KITTI AP over 40 recall points (the benchmark's since 2019; default) or the older 11")
    add_view_arguments(parser)
    args = parser.parse_args(argv)
    if args.checkpoint is not None and args.images is None:
        parser.error("--checkpoint needs --images DIR")
    if args.detections is not None and (args.detections_out or args.score_threshold is not None
                                        or args.max_detections is not None):
        parser.error("--detections-out, --score-threshold and --max-detections apply to --checkpoint only")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.class_map and args.checkpoint is None:
        parser.error("--class-map maps a model's classes: it applies to --checkpoint only")
    scorers = [b for b in args.backend if b in BACKENDS]
    runtimes = [b for b in args.backend if b in MODEL_BACKENDS]
    if len(scorers) > 1 or len(runtimes) > 1:
        parser.error(f"--backend: at most one scorer {BACKENDS} and one runtime {MODEL_BACKENDS}, got {args.backend}")
    if runtimes and args.checkpoint is None:
        parser.error(f"--backend {runtimes[0]} runs a model: it applies to --checkpoint only")
    args.backend = scorers[0] if scorers else "pycocotools"
    args.runtime = runtimes[0] if runtimes else "torch"
    return args


def evaluate(args: argparse.Namespace) -> tuple[CocoEvalRun, list[str]]:
    """The evaluation of ``--checkpoint`` (its detections written) or of ``--detections``; what was written.
    With ``--metric kitti`` the KITTI keys are added to ``run.metrics``."""
    run, results, written = _evaluate_coco(args)
    if args.metric == "kitti":
        from detector.data.coco import load_coco_json
        from detector.evaluation.kitti import frames_from_coco, kitti_metrics

        ground_truth = load_coco_json(args.annotations)
        gt_frames, det_frames = frames_from_coco(ground_truth, results, list(run.coco_eval.params.imgIds))
        run.metrics.update(kitti_metrics(gt_frames, det_frames, recall_points=args.kitti_recall_points))
    return run, written


def _evaluate_coco(args: argparse.Namespace) -> tuple[CocoEvalRun, list[dict], list[str]]:
    if args.checkpoint is None:
        run = run_coco_eval(args.annotations, args.detections, backend=args.backend)
        return run, run.coco_dt.dataset["annotations"], []
    from detector.data.converters import parse_class_map
    from detector.evaluation.evaluate import evaluate_on_dataset
    from detector.inference import BACKENDS as RUNTIMES
    from detector.inference import Predictor, is_onnx_file, load_runner

    if args.runtime != "torch" and not is_onnx_file(args.checkpoint):
        raise ValueError(f"--backend {args.runtime} runs an exported .onnx file and {args.checkpoint} is not one "
                         "(export it with tools/export.py)")
    # An .onnx runs on the CPU whatever --device says (ONNX Runtime unless --backend openvino).
    views = view_options(args)
    class_map = parse_class_map(args.class_map) if args.class_map else None
    runner, label_map = load_runner(args.checkpoint, args.device, score_threshold=args.score_threshold,
                                    max_detections=args.max_detections,
                                    runtime=RUNTIMES[args.runtime] or "onnxruntime")
    # The runner keeps what the flags ask for; the Predictor filters no further.
    predictor = Predictor(runner, label_map, max_detections=args.max_detections, **views)
    if predictor.view != FrameView():  # sliced or letterboxed (the flags', or the view the model records)
        from detector.evaluation.evaluate import evaluate_predictor_on_dataset

        print(f"view: {predictor.view.describe()}", file=sys.stderr)
        run, results = evaluate_predictor_on_dataset(predictor, args.images, args.annotations,
                                                     batch_size=args.batch_size, backend=args.backend,
                                                     class_map=class_map)
    else:
        run, results = evaluate_on_dataset(runner, label_map, args.images, args.annotations,
                                           batch_size=args.batch_size, num_workers=args.num_workers,
                                           backend=args.backend, class_map=class_map)
    dets_path = args.detections_out or args.output.with_name("detections.json")
    atomic_write_text(dets_path, json.dumps(results) + "\n")
    return run, results, [f"detections ({len(results)}, COCO results format) -> {dets_path}"]


def plot(run: CocoEvalRun, args: argparse.Namespace) -> list[str]:
    """Precision-recall curves, and the gallery when the images are known; what was written."""
    from detector.evaluation.plots import plot_gallery, plot_pr_curves

    curves = plot_pr_curves(run, args.plots)
    written = [f"precision-recall curves ({len(curves)} PNG) -> {args.plots}"]
    if args.images is not None:
        gallery = plot_gallery(run, args.images, args.plots)
        written.append(f"gallery ({', '.join(p.name for p in gallery) or 'nothing to show'}) -> {args.plots}")
    return written


def model_runtime(args: argparse.Namespace) -> str:
    """What ran the model: torch for a checkpoint, ONNX Runtime / OpenVINO / ExecuTorch for an export."""
    name = str(args.checkpoint).lower()
    if name.endswith(".pte"):
        return "executorch"
    if name.endswith(".onnx"):
        return "openvino" if args.runtime == "openvino" else "onnx"
    return "torch"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run, written = evaluate(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(run.metrics)
    if args.metric == "kitti":
        from detector.evaluation.kitti import format_kitti_table

        print("\n" + format_kitti_table(run.metrics))
    atomic_write_text(args.output, json.dumps(run.metrics, indent=2) + "\n")
    written.insert(0, f"metrics -> {args.output}")
    if args.plots is not None:
        written.extend(plot(run, args))
    for note in run.notes:  # categories matched otherwise than exactly, images left out
        print(f"note: {note}")
    model = "" if args.checkpoint is None else f", model on {model_runtime(args)}"
    print(f"\nAP {run.metrics['AP']:.4f}  AP50 {run.metrics['AP50']:.4f} ({args.backend}{model}, "
          f"{run.metrics['num_images']} images); wrote:")
    for line in written:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
