#!/usr/bin/env python
"""Download (or take) a named public dataset, verify it, and write the project's layout.

    python tools/fetch_dataset.py carla --output data/carla
    python tools/fetch_dataset.py carla --output data/carla --from DIR    # an extract or a clone

Without ``--from`` the archive of the recorded commit is downloaded over HTTPS into
``--download-dir`` (kept there, so a re-run does not download again) and extracted to a temporary
folder; offline, the error says which URL to fetch by hand. The files are checked against the
recorded tree digest before anything is written. Output: ``images/``, ``train.json``,
``val.json``, ``test.json`` (COCO, file names relative to ``OUTPUT/images``), the dataset's
``LICENSE`` and ``SOURCE.json``. The counts per class per split and what the converter dropped
(and why) are printed. :mod:`detector.data.datasets` documents each dataset and the split rule.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from detector.data.datasets import DATASETS, DatasetMismatchError, DownloadError, download_archive, extract_archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(DATASETS), help="the dataset")
    parser.add_argument("--output", type=Path, required=True, help="folder to write (e.g. data/carla)")
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="an extracted archive or a clone at the recorded commit, instead of downloading")
    parser.add_argument("--download-dir", type=Path, default=Path("data/downloads"),
                        help="where the downloaded archive is kept (default: data/downloads)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of upstream train carved as val")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val split rule")
    args = parser.parse_args(argv)

    dataset = DATASETS[args.name]
    print(f"{dataset.name}: github.com/{dataset.repository} at {dataset.commit} ({dataset.licence} licence)")
    try:
        if args.source is not None:
            prepared = dataset.prepare(args.source, args.output, val_fraction=args.val_fraction, seed=args.seed)
        else:
            print(f"downloading {dataset.archive_url}")
            archive = download_archive(dataset, args.download_dir)
            # The extract is only a step: the prepared copy is what stays (the archive is kept for re-runs).
            with tempfile.TemporaryDirectory(dir=args.download_dir, prefix=f".{dataset.name}-") as tmp:
                root = extract_archive(archive, tmp, dataset)
                try:
                    prepared = dataset.prepare(root, args.output, val_fraction=args.val_fraction, seed=args.seed)
                except DatasetMismatchError as err:
                    raise DatasetMismatchError(f"{err}\n(the archive: {archive}; delete it to download again)") from err
    except (DownloadError, DatasetMismatchError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err

    print(f"verified: tree digest {prepared.tree_digest}")
    for listing, report in prepared.reports.items():
        print(f"\nconverted upstream {listing} (VOC labels):\n{report.summary()}")
    print("\nboxes per class per split (no boxes: frames kept as negatives):")
    print("\n".join(prepared.table()))
    print(f"\nwrote {prepared.output}: images/, " + ", ".join(s.file.name for s in prepared.splits)
          + ", LICENSE, SOURCE.json (file names relative to images/)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
