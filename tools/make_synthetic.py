#!/usr/bin/env python
"""Write the synthetic shapes set: DIR/train/*.jpg, DIR/val/*.jpg, DIR/train.json, DIR/val.json (COCO).

    python tools/make_synthetic.py --output data/synthetic --train 1000 --val 200 --seed 0
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from detector.data.synthetic import CLASSES, SyntheticConfig, make_synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="folder to write into")
    parser.add_argument("--train", type=int, default=1000, help="training images")
    parser.add_argument("--val", type=int, default=200, help="validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=320, help="square image side in pixels")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    config = SyntheticConfig(image_size=args.image_size)
    sets = make_synthetic(args.output, args.train, args.val, args.seed, config, progress=True)
    elapsed = time.perf_counter() - start
    for split, coco in sets.items():
        print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} boxes -> "
              f"{args.output / split}/, {args.output / (split + '.json')}")
    print(f"classes: {', '.join(CLASSES)}; {args.image_size}x{args.image_size}; seed {args.seed}; {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
