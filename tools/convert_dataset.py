#!/usr/bin/env python
"""Convert Pascal VOC XML, YOLO text, KITTI or BDD100K labels to one COCO JSON file.

    python tools/convert_dataset.py --from voc --images DIR --annotations DIR --output FILE.json [--split-file FILE]
        [--classes NAME,NAME,... | --classes FILE | --categories-from train.json]
    python tools/convert_dataset.py --from yolo --images DIR --labels DIR --classes FILE --output FILE.json [--split-file FILE]
    python tools/convert_dataset.py --from kitti --images image_2 --labels label_2 --output FILE.json \
        [--class-map "Car,Van,Truck=vehicle" "Pedestrian=person"] [--split-file FILE]
    python tools/convert_dataset.py --from bdd100k --images DIR --labels LABELS.json --output FILE.json \
        [--class-map "car,truck,bus=vehicle" "pedestrian,person=person"]

KITTI and BDD100K keep every type (category) by default; with ``--class-map`` only the mapped ones, and
the others (and KITTI's DontCare) become ignore regions (``iscrowd=1``), as KITTI's evaluation ignores
detections there. KITTI annotations keep ``truncated``, ``occluded``, ``alpha`` and ``kitti_type``.

Give every split of a VOC set the same category ids: ``--classes`` (names in id order 1..K, comma-separated
or one per line in a file) or ``--categories-from`` an already converted split. Without either, the ids
number the classes found in this split (sorted by name), and a split that lacks one numbers the others
otherwise; training and evaluation match categories by name, but other tools may not.

``images[*].file_name`` in the output is relative to --images: train with
``CocoDetection(images_dir=--images, annotation_file=--output)``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from detector.data.coco import load_coco_json
from detector.data.converters import (bdd100k_to_coco, kitti_to_coco, parse_class_map, read_text, voc_to_coco,
                                      write_coco, yolo_to_coco)
from detector.errors import report_user_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", choices=("voc", "yolo", "kitti", "bdd100k"), required=True, help="input format")
    parser.add_argument("--images", type=Path, required=True, help="images folder")
    parser.add_argument("--annotations", type=Path, help="VOC: folder of *.xml")
    parser.add_argument("--labels", type=Path, help="YOLO, KITTI: folder of <stem>.txt; BDD100K: the labels JSON")
    parser.add_argument("--class-map", nargs="+", metavar="NAME[,NAME...]=TARGET",
                        help="KITTI, BDD100K: keep these types under these names (others become ignore regions)")
    parser.add_argument("--classes", help="YOLO: file of class names, one per line (line i = class i); VOC: the "
                                          "class names in id order, comma-separated or a file of one per line")
    parser.add_argument("--categories-from", type=Path,
                        help="VOC: a COCO JSON (e.g. the converted train split) whose categories, ids and names, "
                             "this split takes")
    parser.add_argument("--split-file", type=Path, help="only the image stems listed (VOC ImageSets/Main/*.txt)")
    parser.add_argument("--output", type=Path, required=True, help="COCO JSON to write")
    args = parser.parse_args(argv)
    if args.source == "voc" and args.annotations is None:
        parser.error("--from voc needs --annotations DIR")
    if args.source == "yolo" and (args.labels is None or args.classes is None):
        parser.error("--from yolo needs --labels DIR and --classes FILE")
    if args.categories_from is not None and (args.source != "voc" or args.classes is not None):
        parser.error("--categories-from is for --from voc, instead of --classes")
    if args.source in ("kitti", "bdd100k") and args.labels is None:
        parser.error(f"--from {args.source} needs --labels")
    if args.class_map and args.source not in ("kitti", "bdd100k"):
        parser.error("--class-map is for --from kitti and --from bdd100k")
    return report_user_errors(lambda: convert(args))


def class_list(value: str) -> list[str]:
    """``--classes`` of a VOC conversion: a file of one name per line, or comma-separated names."""
    path = Path(value)
    if path.is_file():
        return [line.strip() for line in read_text(path).splitlines() if line.strip()]
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--classes {value!r}: no class names (give NAME,NAME,... or a file of one per line)")
    return names


def convert(args: argparse.Namespace) -> int:
    class_map = parse_class_map(args.class_map) if args.class_map else None
    if args.source == "voc":
        categories = load_coco_json(args.categories_from)["categories"] if args.categories_from else None
        names = class_list(args.classes) if args.classes is not None else None
        coco, report = voc_to_coco(args.annotations, args.images, args.split_file, class_names=names,
                                   categories=categories)
    elif args.source == "yolo":
        coco, report = yolo_to_coco(args.images, args.labels, Path(args.classes), args.split_file)
    elif args.source == "kitti":
        coco, report = kitti_to_coco(args.images, args.labels, class_map, args.split_file)
    else:
        coco, report = bdd100k_to_coco(args.images, args.labels, class_map)
    out = write_coco(coco, args.output)
    print(report.summary())
    if args.source == "voc" and args.classes is None and args.categories_from is None and args.split_file:
        print("note: category ids number the classes found in this split; give --classes or --categories-from "
              "so that every split has the same ids")
    print(f"wrote {out} (file names relative to {args.images})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
