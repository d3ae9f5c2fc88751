#!/usr/bin/env python
"""How well a config's default boxes cover a COCO-format set's boxes, by box size.

    python tools/anchor_coverage.py --annotations data/synthetic/val.json --config configs/quickstart.yaml
        [--image-size N] [--json OUT]

Builds the model the config's ``model`` section describes at its ``data.image_size`` (or
``--image-size``), resizes every box as training does (each image stretched to a square), and
prints, per relative box size ``sqrt(w * h) / image side``: the boxes, the share with no anchor at
IoU >= the config's matching threshold (they train on one forced match only), the mean number of
anchors at or above it, and the median best IoU. Crowd boxes are left out, as in training.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


import torch
import yaml

from detector.evaluation.anchor_coverage import anchor_coverage, coverage_by_size
from detector.modeling.ssdlite import DEFAULTS, build_model

SIZE_EDGES = (0.0, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0)


def read_boxes(annotations: Path, side: int) -> torch.Tensor:
    """Non-crowd boxes of ``annotations`` as xyxy in a ``side x side`` network input."""
    try:
        coco = json.loads(annotations.read_text())
        sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
        rows = []
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            width, height = sizes[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            sx, sy = side / width, side / height
            rows.append((x * sx, y * sy, (x + w) * sx, (y + h) * sy))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"{annotations}: not a readable COCO annotation file ({error!r})") from error
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, required=True, help="COCO-format JSON")
    parser.add_argument("--config", type=Path, required=True, help="a training config (its model and data sections)")
    parser.add_argument("--image-size", type=int, default=None, help="network input side (default: the config's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)

    config = yaml.safe_load(args.config.read_text()) or {}
    model_options = {k: v for k, v in (config.get("model") or {}).items() if k in DEFAULTS or k == "preset"}
    model_options["pretrained_backbone"] = "none"  # anchors do not depend on weights
    side = args.image_size or (config.get("data") or {}).get("image_size") or DEFAULTS["image_size"]
    model = build_model(**{**model_options, "image_size": side, "num_classes": 2})
    threshold = model.criterion.matcher.iou_threshold

    boxes = read_boxes(args.annotations, side)
    best_iou, positives = anchor_coverage(boxes, model.anchors, threshold)
    bins = coverage_by_size(boxes, side, best_iou, positives, SIZE_EDGES)

    print(f"{args.config} at {side}x{side}: {model.anchors.shape[0]} anchors "
          f"({model.anchor_generator.num_anchors_per_location()} per location), positives from IoU {threshold}")
    print(f"{'box size / side':>16} {'boxes':>7} {'no positive':>12} {'positives/box':>14} {'median best IoU':>16}")
    for row in bins:
        if row.boxes:
            print(f"{row.low:>7.2f} - {row.high:<6.2f} {row.boxes:>7d} {row.uncovered:>12.1%} "
                  f"{row.mean_positives:>14.2f} {row.median_best_iou:>16.3f}")
    (total,) = coverage_by_size(boxes, side, best_iou, positives, (0.0, float("inf")))
    print(f"{'all':>16} {total.boxes:>7d} {total.uncovered:>12.1%} {total.mean_positives:>14.2f}")
    if args.json:
        summary = {"config": str(args.config), "image_size": side, "anchors": int(model.anchors.shape[0]),
                   "iou_threshold": threshold, "boxes": total.boxes, "no_positive": total.uncovered,
                   "positives_per_box": total.mean_positives, "by_size": [asdict(b) for b in bins]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
