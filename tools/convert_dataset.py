#!/usr/bin/env python
"""Convert Pascal VOC XML or YOLO text labels to one COCO JSON file.

    python tools/convert_dataset.py --from voc --images DIR --annotations DIR --output FILE.json [--split-file FILE]
    python tools/convert_dataset.py --from yolo --images DIR --labels DIR --classes FILE --output FILE.json [--split-file FILE]

``images[*].file_name`` in the output is relative to --images: train with
``CocoDetection(images_dir=--images, annotation_file=--output)``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from detector.data.converters import voc_to_coco, write_coco, yolo_to_coco


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", choices=("voc", "yolo"), required=True, help="input format")
    parser.add_argument("--images", type=Path, required=True, help="images folder")
    parser.add_argument("--annotations", type=Path, help="VOC: folder of *.xml")
    parser.add_argument("--labels", type=Path, help="YOLO: folder of <stem>.txt")
    parser.add_argument("--classes", type=Path, help="YOLO: class names, one per line (line i = class i)")
    parser.add_argument("--split-file", type=Path, help="only the image stems listed (VOC ImageSets/Main/*.txt)")
    parser.add_argument("--output", type=Path, required=True, help="COCO JSON to write")
    args = parser.parse_args(argv)

    if args.source == "voc":
        if args.annotations is None:
            parser.error("--from voc needs --annotations DIR")
        coco, report = voc_to_coco(args.annotations, args.images, args.split_file)
    else:
        if args.labels is None or args.classes is None:
            parser.error("--from yolo needs --labels DIR and --classes FILE")
        coco, report = yolo_to_coco(args.images, args.labels, args.classes, args.split_file)
    out = write_coco(coco, args.output)
    print(report.summary())
    print(f"wrote {out} (file names relative to {args.images})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
