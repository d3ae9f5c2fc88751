"""The model zoo: published COCO detectors that load exactly into this package.

    python tools/zoo.py list                                  # name, source, COCO AP, size, cached?
    python tools/zoo.py download NAME                         # into torch's hub cache, checksum checked
    python tools/zoo.py convert NAME --output model.ckpt      # a checkpoint of this package

Anywhere a checkpoint goes, ``zoo:NAME`` works too:

    python tools/predict.py --checkpoint zoo:ssdlite320_mobilenet_v3_large_coco --input photo.jpg --output out/
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from detector.zoo import fetch, get_zoo_model, zoo_checkpoint, zoo_models


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
            print(f"{args.name}: {fetch(get_zoo_model(args.name))} (checksum verified)")
        else:
            from detector.checkpoint import atomic_save

            atomic_save(zoo_checkpoint(args.name), args.output)
            print(f"{args.name}: wrote {args.output}")
    except (FileNotFoundError, ValueError) as error:  # offline, unknown name, bad checksum: the message says what to do
        print(f"zoo: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
