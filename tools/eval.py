"""COCO box metrics of a model or of an existing detections file, exactly as pycocotools computes them.

Run a model over a COCO-format set (writes the detections, then evaluates)::

    python tools/eval.py --checkpoint CKPT --images DIR --annotations FILE [--output metrics.json]
        [--detections-out dets.json] [--batch-size N] [--backend pycocotools|faster-coco-eval]
        [--score-threshold F] [--max-detections N] [--plots DIR]

Evaluate an existing COCO results file (no model)::

    python tools/eval.py --detections dets.json --annotations FILE [--output metrics.json]
        [--plots DIR [--images DIR]]

Prints the 12-line COCO summary and a per-class table and writes ``metrics.json`` (keys in
:mod:`detector.evaluation.coco`). ``--plots DIR`` adds precision-recall curves and, when the images are
known, a gallery of the worst and best images.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.evaluation.coco import BACKENDS, CocoEvalRun, CocoEvaluator, print_report, run_coco_eval
from detector.labels import LabelMap


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="model checkpoint (.ckpt) or exported model (.onnx) to run (needs --images)")
    source.add_argument("--detections", type=Path, help="existing COCO results JSON to evaluate")
    parser.add_argument("--annotations", type=Path, required=True, help="COCO ground-truth JSON")
    parser.add_argument("--images", type=Path, help="images folder (required with --checkpoint; enables the gallery)")
    parser.add_argument("--output", type=Path, default=Path("metrics.json"), help="metrics JSON (default: %(default)s)")
    parser.add_argument("--detections-out", type=Path,
                        help="where --checkpoint writes its COCO results (default: detections.json beside --output)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1'...")
    parser.add_argument("--backend", choices=BACKENDS, default="pycocotools")
    parser.add_argument("--score-threshold", type=float, help="keep detections above this score (default: the model's)")
    parser.add_argument("--max-detections", type=int, help="detections per image after NMS (default: the model's)")
    parser.add_argument("--plots", type=Path, help="folder for precision-recall curves and the image gallery")
    args = parser.parse_args(argv)
    if args.checkpoint is not None and args.images is None:
        parser.error("--checkpoint needs --images DIR")
    if args.detections is not None and (args.detections_out or args.score_threshold is not None
                                        or args.max_detections is not None):
        parser.error("--detections-out, --score-threshold and --max-detections apply to --checkpoint only")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


@dataclass
class ModelRunner:
    """What evaluation needs from a model: a predict function and how to prepare its input.

    ``predict(images FloatTensor[B, 3, H, W] normalised, sizes [(h, w), ...])`` returns per image
    ``{"boxes": [N, 4] xyxy original pixels, "scores": [N], "labels": [N] in 1..K}``.
    """

    predict: Callable[[Any, list[tuple[int, int]]], list[dict[str, Any]]]
    label_map: LabelMap
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: Any


def load_model_runner(
    checkpoint: Path, device: str = "auto", score_threshold: float | None = None, max_detections: int | None = None
) -> ModelRunner:
    """Load ``checkpoint`` into a :class:`ModelRunner` (the one place that knows the model format):
    a PyTorch checkpoint, or an ``.onnx`` exported by ``tools/export.py`` (run with ONNX Runtime)."""
    import torch

    from detector.checkpoint import load_checkpoint

    if Path(checkpoint).suffix.lower() == ".onnx":
        # An exported model runs on ONNX Runtime's CPU provider whatever --device says; its metadata
        # gives the label map, input size and normalisation.
        from detector.deploy.onnx_runtime import load_onnx_runner

        onnx_runner = load_onnx_runner(checkpoint, score_threshold=score_threshold, max_detections=max_detections)

        def predict_onnx(images: torch.Tensor, sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
            return onnx_runner(images.cpu(), image_sizes=sizes)

        info = onnx_runner.info
        return ModelRunner(predict_onnx, info.label_map, info.image_size, info.mean, info.std, torch.device("cpu"))

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)
    model, label_map = load_checkpoint(checkpoint, map_location=dev)
    # The post-processor reads these per call, so evaluation can keep more (or fewer) boxes than training did.
    if score_threshold is not None:
        model.post_processor.score_threshold = score_threshold
    if max_detections is not None:
        model.post_processor.max_detections = max_detections

    def predict(images: torch.Tensor, sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
        with torch.inference_mode():
            return model.predict(images.to(dev, non_blocking=True), sizes)

    return ModelRunner(predict, label_map, tuple(model.image_size), tuple(model.mean), tuple(model.std), dev)


def run_model(args: argparse.Namespace) -> tuple[CocoEvalRun, list[dict[str, Any]]]:
    """Run the checkpoint over every image of ``--annotations``; returns the evaluation and the results list."""
    import torch
    from tqdm import tqdm

    from detector.data.coco import CocoDetection, detection_collate
    from detector.data.transforms import build_transforms

    runner = load_model_runner(args.checkpoint, args.device, args.score_threshold, args.max_detections)
    transform = build_transforms("none", image_size=runner.image_size, train=False, mean=runner.mean, std=runner.std)
    dataset = CocoDetection(args.images, args.annotations, transform)
    missing = sorted(set(runner.label_map.category_ids) - set(dataset.coco.getCatIds()))
    if missing:
        raise ValueError(
            f"the checkpoint predicts category id(s) {missing} that {args.annotations} does not list; "
            f"it was trained on other categories ({list(runner.label_map.names)[:10]}...)"
        )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers,
        collate_fn=detection_collate, pin_memory=runner.device.type == "cuda",
    )
    # Every annotated image counts: one that fails to decode is scored as all misses, not skipped.
    evaluator = CocoEvaluator(dataset.coco, label_map=runner.label_map, backend=args.backend, all_images=True)
    for images, targets in tqdm(loader, desc="eval", unit="batch"):
        if not targets:
            continue
        predictions = runner.predict(images, [tuple(t["orig_size"]) for t in targets])
        evaluator.process([t["image_id"] for t in targets], predictions)
    evaluator.evaluate()
    assert evaluator.last_run is not None
    return evaluator.last_run, evaluator.results()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=None if isinstance(data, list) else 2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    written: list[str] = []
    try:
        if args.checkpoint is not None:
            run, results = run_model(args)
            dets_path = args.detections_out or args.output.with_name("detections.json")
            _write_json(dets_path, results)
            written.append(f"detections ({len(results)}, COCO results format) -> {dets_path}")
        else:
            run = run_coco_eval(args.annotations, args.detections, backend=args.backend)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    print_report(run.metrics)
    _write_json(args.output, run.metrics)
    written.insert(0, f"metrics -> {args.output}")
    if args.plots is not None:
        from detector.evaluation.plots import plot_gallery, plot_pr_curves

        curves = plot_pr_curves(run, args.plots)
        written.append(f"precision-recall curves ({len(curves)} PNG) -> {args.plots}")
        if args.images is not None:
            gallery = plot_gallery(run, args.images, args.plots)
            written.append(f"gallery ({', '.join(p.name for p in gallery) or 'nothing to show'}) -> {args.plots}")
    print(f"\nAP {run.metrics['AP']:.4f}  AP50 {run.metrics['AP50']:.4f} ({args.backend}); wrote:")
    for line in written:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
