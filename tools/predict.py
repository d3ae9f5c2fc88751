"""Run the detector over photos: draw the detections and write them as COCO results.

    python tools/predict.py --checkpoint CKPT --input PATH --output DIR
        [--score-threshold 0.4] [--classes NAME,NAME] [--backend torch|onnx|openvino]
        [--batch-size N] [--device cpu|cuda|auto] [--slice [--slice-size S|HxW] [--slice-overlap 0.2]] [--letterbox]

PATH is an image file, a folder (searched recursively for images) or a glob pattern (quote it:
"photos/*.jpg"). Each image is written to DIR under its own file name (a folder's sub-folders
are kept) in its own format, with boxes, class names and scores drawn. ``DIR/detections.json`` is
a COCO results list (``image_id``, ``category_id`` = the model's own category ids, ``bbox`` =
``[x, y, w, h]`` in the image's pixels, ``score``) plus ``file_name`` in every entry, loadable by
``pycocotools.COCO.loadRes``; ``DIR/images.json`` indexes the images (``id``, ``file_name``,
``width``, ``height``). Unreadable files are reported by name and skipped.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from detector.data.io import ImageReadError, list_images, load_image
from detector.evaluation.coco import predictions_to_results
from detector.files import atomic_write, atomic_write_text
from detector.inference import BACKENDS, Predictor
from detector.pretrain import is_classifier_checkpoint, predict_images
from detector.pretrain.predict import is_classifier_export
from detector.slicing import add_view_arguments, view_options
from detector.video.draw import draw_detections


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint, zoo:NAME, exported .onnx or ExecuTorch .pte")
    parser.add_argument("--input", required=True, help="image file, folder or glob pattern")
    parser.add_argument("--output", type=Path, required=True, help="folder for drawn images and detections.json")
    parser.add_argument("--score-threshold", type=float, default=0.4, help="default: %(default)s")
    parser.add_argument("--classes", help="comma-separated class names to keep")
    parser.add_argument("--backend", choices=tuple(BACKENDS), default="torch",
                        help="onnx: run an exported .onnx with ONNX Runtime (what torch does with one too); "
                             "openvino: with OpenVINO (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device for --backend torch: cpu, cuda, auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_view_arguments(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if not 0.0 <= args.score_threshold <= 1.0:
        parser.error("--score-threshold must be in 0..1")
    return args


def find_images(spec: str) -> list[tuple[Path, str]]:
    """``(path, name under DIR)`` for an image file, a folder (recursive) or a glob pattern, sorted.

    A single file or a glob keeps only its matches' file names, and a name used twice gets a
    numeric suffix so no output overwrites another; a folder keeps its relative layout.
    """
    path = Path(spec)
    if path.is_file():
        return [(path, path.name)]
    if path.is_dir():
        return [(p, p.relative_to(path).as_posix()) for p in list_images(path)]
    if glob.has_magic(spec):
        out: list[tuple[Path, str]] = []
        used: set[str] = set()
        for p in sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()):
            name, k = p.name, 1
            while name in used:
                name, k = f"{p.stem}_{k}{p.suffix}", k + 1
            used.add(name)
            out.append((p, name))
        return out
    raise FileNotFoundError(f"--input {spec!r} is not an image file, a folder or a glob pattern that exists")


def save_image(image: np.ndarray, path: Path) -> None:
    """Write in the format the suffix names (JPEG at quality 95; RGB everywhere), atomically."""
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    options = {"quality": 95} if fmt == "JPEG" else {}
    with atomic_write(path) as tmp:
        Image.fromarray(image).save(tmp, format=fmt, **options)


def coco_results(det: dict[str, Any], image_id: int, file_name: str) -> list[dict[str, Any]]:
    """COCO results entries (``bbox`` ``[x, y, w, h]`` to 0.01 px, score to 1e-5) with ``file_name``."""
    return [{**r, "bbox": [round(v, 2) for v in r["bbox"]], "score": round(r["score"], 5), "file_name": file_name}
            for r in predictions_to_results([image_id], [det])]


def load_predictor(args: argparse.Namespace) -> Predictor:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    options = {"score_threshold": args.score_threshold, "classes": classes, **view_options(args)}
    return Predictor.load(args.checkpoint, args.backend, device=args.device, **options)


def predict_all(predictor: Predictor, inputs: list[tuple[Path, str]], args: argparse.Namespace) -> tuple[list, list, list]:
    """Detect, draw and save batch by batch; returns the COCO results, the image index and the unreadable files."""
    results: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    unreadable: list[str] = []
    with tqdm(total=len(inputs), desc="predict", unit="img", disable=args.no_progress) as bar:
        for start in range(0, len(inputs), args.batch_size):
            chunk = inputs[start:start + args.batch_size]
            loaded = []
            for path, name in chunk:
                try:
                    loaded.append((load_image(path), name))
                except ImageReadError as err:
                    unreadable.append(str(path))
                    tqdm.write(f"skipped: {err}", file=sys.stderr)
            detections = predictor.predict_batch([image for image, _ in loaded]) if loaded else []
            for (image, name), det in zip(loaded, detections):
                image_id = len(index) + 1
                index.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
                results.extend(coco_results(det, image_id, name))
                save_image(draw_detections(image, det["boxes"], det["scores"], det["names"]), args.output / name)
            bar.update(len(chunk))
    return results, index, unreadable


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        inputs = find_images(args.input)
        if (args.backend == "torch" and is_classifier_checkpoint(args.checkpoint)) or is_classifier_export(args.checkpoint):
            # A classifier (tools/train_classifier.py, a zoo classifier, or its ONNX / ExecuTorch export):
            # print the top-5 classes of each image.
            return predict_images(args.checkpoint, inputs, args.output, k=5, batch_size=args.batch_size,
                                  device=args.device)
        predictor = load_predictor(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not inputs:
        print(f"error: no images found at {args.input!r}", file=sys.stderr)
        return 1

    args.output.mkdir(parents=True, exist_ok=True)
    results, index, unreadable = predict_all(predictor, inputs, args)
    detections_path = args.output / "detections.json"
    atomic_write_text(detections_path, json.dumps(results))
    atomic_write_text(args.output / "images.json",
                      json.dumps({"images": index, "categories": predictor.label_map.categories()}))
    print(f"{len(index)} image(s) with {len(results)} detection(s) drawn into {args.output}/; "
          f"COCO results in {detections_path}, image index in {args.output / 'images.json'}")
    if unreadable:
        print(f"{len(unreadable)} unreadable file(s) skipped: {', '.join(unreadable)}", file=sys.stderr)
    return 0 if index else 1


if __name__ == "__main__":
    sys.exit(main())
