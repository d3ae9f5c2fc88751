"""The model zoo: published COCO detectors and ImageNet classifiers that load exactly into this package.

    python tools/zoo.py list                                  # name, source, AP / top-1, size, cached?
    python tools/zoo.py download NAME                         # into torch's hub cache, checksum checked
    python tools/zoo.py convert NAME --output model.ckpt      # a checkpoint of this package

Anywhere a checkpoint goes, ``zoo:NAME`` works too; a classifier also as a detector's ImageNet start:

    python tools/predict.py --checkpoint zoo:ssdlite320_mobilenet_v3_large_coco --input photo.jpg --output out/
    python tools/predict.py --checkpoint zoo:mobilenet_v2_1.0_224_imagenet_quant --input photo.jpg --output out/
    python tools/train.py fit ... --model.preset ssdlite_mobilenet_v2_tf \
        --model.pretrained_backbone zoo:mobilenet_v2_1.0_224_imagenet_quant
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from detector.zoo import (
    fetch,
    get_zoo_model,
    is_zoo_classifier,
    zoo_checkpoint,
    zoo_classifier_checkpoint,
    zoo_classifiers,
    zoo_models,
)


def list_models() -> None:
    print("| name | source | box AP | AP on | input | file MB | cached |")
    print("|---|---|---:|---|---|---:|---|")
    for model in zoo_models().values():
        height, width = model.input_size
        cached = ("shipped" if model.packaged else "yes") if model.cache_path.is_file() else f"no ({model.cache_path})"
        size_mb = model.file_size_mb
        if size_mb is None and model.cache_path.is_file():  # a shipped file: its size on disk
            size_mb = model.cache_path.stat().st_size / 1e6
        size = "?" if size_mb is None else f"{size_mb:.1f}"
        ap = "-" if model.box_ap is None else f"{model.box_ap:.1f}"
        print(f"| {model.name} | {model.source} | {ap} | {model.ap_on} | {height}x{width} | {size} "
              f"| {cached} |")
    print("\nImageNet classifiers (zoo:NAME as a classifier, or as --model.pretrained_backbone):\n")
    print("| name | source | top-1 % | top-1 on | input | file MB | cached |")
    print("|---|---|---:|---|---|---:|---|")
    for classifier in zoo_classifiers().values():
        height, width = classifier.input_size
        cached = "yes" if classifier.cache_path.is_file() else f"no ({classifier.cache_path})"
        top1 = "-" if classifier.top1 is None else f"{classifier.top1:.1f}"
        print(f"| {classifier.name} | {classifier.source} | {top1} | {classifier.top1_on} | {height}x{width} "
              f"| {classifier.file_size_mb:.1f} | {cached} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the zoo's models")
    download = commands.add_parser("download", help="fetch a model into torch's hub cache")
    download.add_argument("name")
    convert = commands.add_parser("convert", help="write a model as a checkpoint of this package")
    convert.add_argument("name")
    convert.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            list_models()
        elif args.command == "download":
            entry = zoo_classifiers()[args.name.removeprefix("zoo:")] if is_zoo_classifier(args.name) else get_zoo_model(args.name)
            print(f"{args.name}: {fetch(entry)} (checksum verified)")
        else:
            from detector.checkpoint import atomic_save

            convert = zoo_classifier_checkpoint if is_zoo_classifier(args.name) else zoo_checkpoint
            atomic_save(convert(args.name), args.output)
            print(f"{args.name}: wrote {args.output}")
    except (FileNotFoundError, ValueError) as error:  # offline, unknown name, bad checksum: the message says what to do
        print(f"zoo: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
