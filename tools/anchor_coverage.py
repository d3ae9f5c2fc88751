#!/usr/bin/env python
"""How well a config's default boxes cover a COCO-format set's boxes, by box size.

    python tools/anchor_coverage.py --annotations data/synthetic/val.json --config configs/quickstart.yaml
        [--image-size N] [--json OUT]

Builds the model the config's ``model`` section describes at its ``data.image_size`` (a side or
``[H, W]``; or ``--image-size``), resizes every box as training does (each image stretched to the
input), and prints, per relative box size ``sqrt(w * h) / sqrt(H * W)``: the boxes, the share with no anchor at
IoU >= the config's matching threshold (they train on one forced match only), the mean number of
anchors at or above it, and the median best IoU. Crowd boxes are left out, as in training.
(:mod:`detector.evaluation.anchor_coverage` does the work.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from detector.evaluation.anchor_coverage import coverage_report, read_coco_boxes
from detector.files import atomic_write_text
from detector.modeling.ssdlite import DEFAULTS, SSDLite, build_model


def model_of_config(config: dict, image_size: int | None) -> tuple[SSDLite, int | list[int]]:
    """The config's model (random weights: anchors do not depend on them) and its input size."""
    options = {k: v for k, v in (config.get("model") or {}).items() if k in DEFAULTS or k == "preset"}
    options["pretrained_backbone"] = "none"
    side = image_size or (config.get("data") or {}).get("image_size") or DEFAULTS["image_size"]
    return build_model(**{**options, "image_size": side, "num_classes": 2}), side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, required=True, help="COCO-format JSON")
    parser.add_argument("--config", type=Path, required=True, help="a training config (its model and data sections)")
    parser.add_argument("--image-size", type=int, default=None, help="network input side (default: the config's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)

    model, side = model_of_config(yaml.safe_load(args.config.read_text()) or {}, args.image_size)
    try:
        boxes = read_coco_boxes(args.annotations, side)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    # ATSS sets a threshold per box (mean + std of its candidates' IoUs): the table then counts
    # positives at the config's fixed iou_threshold, as a guide to how well the anchors fit.
    threshold = getattr(model.criterion.matcher, "iou_threshold", None)
    if threshold is None:
        threshold = float(model.config["iou_threshold"])
        print(f"assigner {model.config.get('assigner')}: thresholds are set per box; the counts below use "
              f"iou_threshold {threshold} as a guide")
    report = coverage_report(boxes, model.anchors, threshold, side)

    height, width = model.image_size
    print(f"{args.config} at {height}x{width}: {report.anchors} anchors "
          f"({model.anchor_generator.num_anchors_per_location()} per location), positives from IoU "
          f"{report.iou_threshold}")
    print("\n".join(report.table()))
    if args.json:
        atomic_write_text(args.json, json.dumps({"config": str(args.config), **report.to_dict()}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
