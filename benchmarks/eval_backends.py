"""Time pycocotools against faster-coco-eval on a large synthetic COCO case and check they agree.

    python benchmarks/eval_backends.py [--images 5000] [--detections-per-image 100] [--repeats 3]

Each timed run is what ``tools/eval.py --detections`` does: index the ground truth, load the
results, ``evaluate``, ``accumulate``, ``summarize`` (:func:`detector.evaluation.coco.run_coco_eval`).
Prints the median time of each backend, the ratio, and the largest difference between their 12
numbers. Minutes of CPU at the defaults; the test suite runs 40 images.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

from detector.evaluation.coco import COCO_STATS_KEYS, run_coco_eval


def synthetic_case(num_images: int, dets_per_image: int, num_classes: int = 80, seed: int = 0) -> tuple[dict, list[dict]]:
    """COCO-like ground truth (640x480, ~7 boxes per image of every size, 1% crowd) and
    ``dets_per_image`` detections per image: jittered copies of most ground-truth boxes plus
    random boxes, all with random scores."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": 640, "height": 480})
        n_gt = int(rng.poisson(7))
        wh = np.exp(rng.uniform(np.log(8), np.log(400), size=(n_gt, 2)))
        xy = rng.uniform(0, 1, size=(n_gt, 2)) * np.maximum([640, 480] - wh, 1)
        cats = rng.integers(1, num_classes + 1, size=n_gt)
        for box, cat in zip(np.hstack([xy, wh]), cats):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(cat), "bbox": box.tolist(),
                         "area": float(box[2] * box[3]), "iscrowd": int(rng.random() < 0.01)})
        hits = [i for i in range(n_gt) if rng.random() < 0.7][:dets_per_image]
        true = np.hstack([xy, wh])[hits] + rng.normal(0, 0.1, size=(len(hits), 4)) * np.tile(wh[hits], 2)
        n_rand = dets_per_image - len(hits)
        rwh = np.exp(rng.uniform(np.log(8), np.log(400), size=(n_rand, 2)))
        rxy = rng.uniform(0, 1, size=(n_rand, 2)) * np.maximum([640, 480] - rwh, 1)
        boxes = np.vstack([true, np.hstack([rxy, rwh])])
        boxes[:, 2:] = np.abs(boxes[:, 2:])
        labels = np.concatenate([cats[hits], rng.integers(1, num_classes + 1, size=n_rand)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, size=len(hits)), rng.uniform(0.0, 0.6, size=n_rand)])
        for box, cat, score in zip(boxes, labels, scores):
            dets.append({"image_id": image_id, "category_id": int(cat), "bbox": box.tolist(), "score": float(score)})
    categories = [{"id": i, "name": f"class{i}"} for i in range(1, num_classes + 1)]
    return {"images": images, "categories": categories, "annotations": anns}, dets


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Times and compares the backends; returns each backend's twelve numbers (``COCO_STATS_KEYS`` order)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections-per-image", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    gt, dets = synthetic_case(args.images, args.detections_per_image)
    print(f"{args.images} images, {len(gt['annotations'])} ground-truth boxes, {len(dets)} detections; "
          f"{args.repeats} runs per backend; python {platform.python_version()}, {platform.processor() or platform.machine()}")
    times: dict[str, list[float]] = {}
    stats: dict[str, list[float]] = {}
    for backend in ("pycocotools", "faster-coco-eval"):
        for _ in range(args.repeats):
            # A fresh copy of the ground truth each run: COCO objects index (and some mutate) their dict.
            gt_copy = {k: list(v) if isinstance(v, list) else v for k, v in gt.items()}
            start = time.perf_counter()
            metrics = run_coco_eval(gt_copy, dets, backend=backend).metrics
            times.setdefault(backend, []).append(time.perf_counter() - start)
            stats[backend] = [metrics[k] for k in COCO_STATS_KEYS]
        print(f"{backend:>17}: median {statistics.median(times[backend]):7.2f} s  "
              f"(runs: {', '.join(f'{t:.2f}' for t in times[backend])})  AP {stats[backend][0]:.6f}")
    ratio = statistics.median(times["pycocotools"]) / statistics.median(times["faster-coco-eval"])
    diff = max(abs(a - b) for a, b in zip(stats["pycocotools"], stats["faster-coco-eval"]))
    print(f"speed-up {ratio:.1f}x; largest difference between the 12 numbers: {diff:.1e}")
    for key, a, b in zip(COCO_STATS_KEYS, stats["pycocotools"], stats["faster-coco-eval"]):
        print(f"  {key:>5}  {a:.15f}  {b:.15f}")
    return stats


if __name__ == "__main__":
    main()
