#!/usr/bin/env python
"""Draw a grid of augmented samples with their boxes and class names: look before a long run.

    python tools/show_dataset.py --images DIR --annotations FILE --pipeline ssd --output DIR -n 16
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np


from detector.data.coco import CocoDetection
from detector.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PIPELINES, build_transforms


def _palette(k: int) -> tuple[int, int, int]:
    hue = int(180 * ((k * 0.618034) % 1.0))
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


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

    train = args.pipeline != "eval"
    transform = build_transforms(args.pipeline if train else "none", args.image_size, train, seed=args.seed)
    dataset = CocoDetection(args.images, args.annotations, transform)
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(dataset), size=args.num, replace=args.num > len(dataset))
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    tiles = []
    for index in picks:
        item = dataset[int(index)]
        if item is None:
            continue
        image, target = item
        # Undo Normalize to get displayable uint8 BGR.
        rgb = np.clip((image.permute(1, 2, 0).numpy() * std + mean) * 255, 0, 255).astype(np.uint8)
        tile = np.ascontiguousarray(rgb[..., ::-1])
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            colour = _palette(label)
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(tile, (x1, y1), (x2 - 1, y2 - 1), colour, 2)
            name = dataset.label_map.name_of_label(label)
            (tw, th), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            ty = max(y1, th + 4)
            cv2.rectangle(tile, (x1, ty - th - 4), (x1 + tw + 4, ty), colour, -1)
            cv2.putText(tile, name, (x1 + 2, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(tile, target["file_name"], (4, tile.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    if not tiles:
        print("no readable samples", file=sys.stderr)
        return 1
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    h, w = tiles[0].shape[:2]
    grid = np.full((rows * h, cols * w, 3), 32, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"samples_{args.pipeline}.jpg"
    cv2.imwrite(str(out), grid, [cv2.IMWRITE_JPEG_QUALITY, 92])
    print(f"wrote {out}: {len(tiles)} samples of {dataset} through pipeline {args.pipeline!r}, "
          f"{rows}x{cols} grid of {w}x{h}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
