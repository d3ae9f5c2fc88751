#!/usr/bin/env python
"""Images per second of a training pipeline through a DataLoader with 0, 1 and 2 workers.

    python benchmarks/data_loading.py --pipeline ssd --image-size 320 --workers 0 1 2 --repeats 3

Without --images/--annotations it measures a freshly written synthetic set (in a temporary folder).
Each figure is the median of --repeats runs of --batches batches, after one warm-up batch.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from detector.data.coco import CocoDetection, detection_collate, worker_init_fn
from detector.data.synthetic import SyntheticConfig, make_split
from detector.data.transforms import PIPELINES, build_transforms


def measure(dataset: CocoDetection, workers: int, batch_size: int, batches: int, seed: int) -> float:
    """Images per second over ``batches`` batches after one warm-up batch (workers start up in it)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=detection_collate,
        worker_init_fn=worker_init_fn, generator=torch.Generator().manual_seed(seed),
        persistent_workers=False, prefetch_factor=4 if workers else None,
    )
    it = iter(loader)
    next(it)
    images, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch, _ = next(it)
        except StopIteration:
            it = iter(loader)
            batch, _ = next(it)
        images += batch.shape[0]
    elapsed = time.perf_counter() - start
    del it
    return images / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, help="images folder (default: a temporary synthetic set)")
    parser.add_argument("--annotations", type=Path, help="COCO JSON")
    parser.add_argument("--pipeline", choices=PIPELINES, default="ssd")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=10, help="timed batches per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the median is reported")
    parser.add_argument("--synthetic-images", type=int, default=256, help="size of the temporary synthetic set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # the loader's cost, not intra-op threads, is what is measured
    with tempfile.TemporaryDirectory() as tmp:
        if args.images is None or args.annotations is None:
            make_split(tmp, "train", args.synthetic_images, args.seed, SyntheticConfig(image_size=args.image_size))
            images, annotations, source = Path(tmp) / "train", Path(tmp) / "train.json", "synthetic (temporary)"
        else:
            images, annotations, source = args.images, args.annotations, str(args.annotations)
        dataset = CocoDetection(images, annotations, build_transforms(args.pipeline, args.image_size, True, seed=args.seed))
        results: dict[int, list[float]] = {}
        runs = [(w, r) for w in args.workers for r in range(args.repeats)]
        for workers, repeat in tqdm(runs, desc="benchmark", unit="run"):
            rate = measure(dataset, workers, args.batch_size, args.batches, args.seed + repeat)
            results.setdefault(workers, []).append(rate)

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nmachine: {os.cpu_count()} CPU cores, load average {load} (other work on the machine slows these)")
    print(f"data: {source}; pipeline {args.pipeline!r} at {args.image_size}x{args.image_size}; "
          f"batch {args.batch_size}; {args.batches} batches x {args.repeats} runs; torch threads 1")
    print("| workers | images/s (median) | min | max |")
    print("|---:|---:|---:|---:|")
    for workers, rates in results.items():
        print(f"| {workers} | {statistics.median(rates):.0f} | {min(rates):.0f} | {max(rates):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
