#!/usr/bin/env python
"""Draw a grid of augmented samples with their boxes and class names: look before a long run.

    python tools/show_dataset.py --images DIR --annotations FILE --pipeline ssd --output DIR -n 16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from detector.data.coco import CocoDetection
from detector.data.transforms import PIPELINES, build_transforms
from detector.errors import report_user_errors
from detector.evaluation.plots import sample_grid
from detector.files import atomic_write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="images folder")
    parser.add_argument("--annotations", type=Path, required=True, help="COCO JSON")
    parser.add_argument("--pipeline", choices=(*PIPELINES, "eval"), default="ssd")
    parser.add_argument("--output", type=Path, required=True, help="folder for the grid image")
    parser.add_argument("-n", "--num", type=int, default=16, help="samples in the grid")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.image_size < 1:
        parser.error(f"--image-size must be a positive number of pixels, got {args.image_size}")
    if args.num < 1:
        parser.error(f"-n/--num must be at least 1, got {args.num}")
    return report_user_errors(lambda: show(args))


def show(args: argparse.Namespace) -> int:
    train = args.pipeline != "eval"
    transform = build_transforms(args.pipeline if train else "none", args.image_size, train, seed=args.seed)
    dataset = CocoDetection(args.images, args.annotations, transform)
    picks = np.random.default_rng(args.seed).choice(len(dataset), size=args.num, replace=args.num > len(dataset))
    grid, count = sample_grid(dataset, picks)
    if count == 0:
        print("no readable samples", file=sys.stderr)
        return 1
    out = args.output / f"samples_{args.pipeline}.jpg"
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise SystemExit(f"could not encode {out}")
    with atomic_write(out) as tmp:
        tmp.write_bytes(encoded.tobytes())
    print(f"wrote {out}: {count} samples of {dataset} through pipeline {args.pipeline!r} "
          f"({grid.shape[1]}x{grid.shape[0]} px)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
