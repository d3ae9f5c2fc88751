"""Evaluation plots: precision-recall curves, a gallery of the worst and best images, and a grid of
a dataset's samples as training sees them (``tools/show_dataset.py``).

The curves are read from ``COCOeval.eval["precision"]`` (the interpolated precision pycocotools
averages into AP), so each plotted curve integrates to the AP reported for it. The gallery ranks
images with pycocotools' own per-image matching (``COCOeval.evaluateImg`` at IoU 0.5); that
ranking is only for choosing pictures, never a reported metric.
"""
from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (servers, CI)
import cv2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.ops import box_convert  # noqa: E402

from detector.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from detector.data.coco import CocoDetection  # noqa: E402
from detector.data.io import ImageReadError, load_image  # noqa: E402
from detector.evaluation.coco import (  # noqa: E402
    CocoEvalRun,
    _category_names,
    load_ground_truth,
    load_results,
)
from detector.files import atomic_write  # noqa: E402
from detector.video.draw import draw_detections  # noqa: E402

__all__ = ["ImageScore", "plot_gallery", "plot_pr_curves", "sample_grid", "score_images"]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def _mean_curve(precision: np.ndarray) -> np.ndarray | None:
    """Mean over categories of ``[R, K]`` precision, ignoring the -1 of categories without ground truth."""
    valid = precision > -1
    if not valid.any():
        return None
    counts = valid.sum(axis=1)
    return np.where(counts > 0, np.where(valid, precision, 0).sum(axis=1) / np.maximum(counts, 1), 0.0)


def plot_pr_curves(run: CocoEvalRun, out_dir: str | Path) -> list[Path]:
    """Write precision-recall curves as PNG.

    Files:
        ``pr_all.png``: the category-averaged curves at IoU 0.50, 0.75 and averaged over 0.50:0.95
        (area "all", 100 detections per image);
        ``pr_per_class/<index>_<name>.png``: one per category with ground truth, at IoU 0.50 and 0.75.

    Returns:
        The written paths.
    """
    out = Path(out_dir)
    (out / "pr_per_class").mkdir(parents=True, exist_ok=True)
    params = run.coco_eval.params
    precision = np.asarray(run.coco_eval.eval["precision"])  # [T, R, K, A, M]
    recall = np.asarray(params.recThrs)
    iou = np.asarray(params.iouThrs)
    t50, t75 = int(np.argmin(np.abs(iou - 0.5))), int(np.argmin(np.abs(iou - 0.75)))
    p = precision[:, :, :, list(params.areaRngLbl).index("all"), -1]  # [T, R, K]
    written: list[Path] = []

    fig, ax = plt.subplots(figsize=(6, 5))
    curves = [("IoU=0.50", p[t50]), ("IoU=0.75", p[t75])]
    for label, curve in curves:
        mean = _mean_curve(curve)
        if mean is not None:
            ax.plot(recall, mean, label=f"{label} (AP {100 * mean.mean():.1f})")
    per_iou = [_mean_curve(p[t]) for t in range(len(iou))]
    if all(c is not None for c in per_iou):
        mean = np.mean(per_iou, axis=0)
        ax.plot(recall, mean, "--", label=f"IoU=0.50:0.95 (AP {100 * mean.mean():.1f})")
    _style(ax, f"All classes ({run.metrics['num_images']} images)")
    written.append(_save(fig, out / "pr_all.png"))

    names = _category_names(run.coco_gt, params.catIds)
    for k, cat_id in enumerate(params.catIds):
        if not (p[t50, :, k] > -1).any():
            continue  # no ground truth: no curve to draw
        fig, ax = plt.subplots(figsize=(5, 4))
        for label, t in (("IoU=0.50", t50), ("IoU=0.75", t75)):
            ax.plot(recall, p[t, :, k], label=f"{label} (AP {100 * p[t, :, k].mean():.1f})")
        name = names[int(cat_id)]
        _style(ax, name)
        written.append(_save(fig, out / "pr_per_class" / f"{k + 1:03d}_{_slug(name)}.png"))
    return written


def _style(ax: Any, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip("."))  # the temporary name has no image suffix
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ImageScore:
    """Per-image matching at IoU 0.5 over detections scoring at least the threshold."""

    image_id: int
    tp: int
    fp: int
    fn: int

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(1, 2 * self.tp + self.fp + self.fn)


def score_images(run: CocoEvalRun, score_threshold: float = 0.3) -> list[ImageScore]:
    """TP / FP / FN per evaluated image from pycocotools' greedy matching at IoU 0.5 (crowd-aware).

    Matching is greedy in score order, so the matches of detections above ``score_threshold`` do
    not depend on those below it. Images with neither ground truth nor detections above the
    threshold are left out (nothing to show).
    """
    from pycocotools.cocoeval import COCOeval

    # Always pycocotools here: faster-coco-eval keeps its per-image matches in C++.
    gt = load_ground_truth(run.coco_gt.dataset, "pycocotools")
    dt = load_results(gt, [{k: a[k] for k in ("image_id", "category_id", "bbox", "score")}
                           for a in run.coco_dt.dataset["annotations"]], "pycocotools")
    ev = COCOeval(gt, dt, "bbox")
    ev.params.imgIds = list(run.coco_eval.params.imgIds)
    ev.params.iouThrs = np.array([0.5])
    ev.params.areaRng = [ev.params.areaRng[0]]
    ev.params.areaRngLbl = ["all"]
    ev.params.maxDets = [100]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    counts: dict[int, list[int]] = {}
    for e in ev.evalImgs:
        if e is None:
            continue
        c = counts.setdefault(int(e["image_id"]), [0, 0, 0])
        scores = np.asarray(e["dtScores"])
        keep = (scores >= score_threshold) & ~np.asarray(e["dtIgnore"][0], dtype=bool)
        matched = np.asarray(e["dtMatches"][0]) > 0
        c[0] += int((keep & matched).sum())
        c[1] += int((keep & ~matched).sum())
        # A ground truth counts as found only when its match scores above the threshold.
        dt_score = dict(zip(e["dtIds"], e["dtScores"]))
        for gt_match, ignored in zip(e["gtMatches"][0], e["gtIgnore"]):
            if not ignored and (gt_match == 0 or dt_score.get(int(gt_match), 0.0) < score_threshold):
                c[2] += 1
    return [ImageScore(i, *c) for i, c in sorted(counts.items()) if sum(c) > 0]


def _draw_ground_truth(image: np.ndarray, boxes: np.ndarray, crowd: Sequence[bool]) -> np.ndarray:
    """Ground truth as thin white boxes (crowd regions dashed-looking grey), so detections stand out."""
    canvas = np.ascontiguousarray(image).copy()
    t = max(1, round(min(image.shape[:2]) / 500))
    for (x1, y1, x2, y2), is_crowd in zip(boxes.round().astype(int), crowd):
        color = (160, 160, 160) if is_crowd else (255, 255, 255)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 0, 0), t + 2)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, t)
    return canvas


def plot_gallery(
    run: CocoEvalRun,
    images_dir: str | Path,
    out_dir: str | Path,
    num_images: int = 8,
    score_threshold: float = 0.3,
) -> list[Path]:
    """Write ``gallery_worst.png`` and ``gallery_best.png``: images ranked by per-image F1 at IoU 0.5.

    Ground truth is drawn in white (crowd regions grey), detections scoring at least
    ``score_threshold`` with their class name and score. Worst: lowest F1, more errors first;
    best: highest F1, more correct boxes first. Images that cannot be read are skipped.

    Returns:
        The written paths (none when no image has anything to show).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = score_images(run, score_threshold)
    if not scores:
        return []
    worst = sorted(scores, key=lambda s: (s.f1, -(s.fp + s.fn), s.image_id))[:num_images]
    best = sorted(scores, key=lambda s: (-s.f1, -s.tp, s.image_id))[:num_images]
    names = _category_names(run.coco_gt, run.coco_gt.getCatIds())
    written = []
    for title, chosen in (("worst", worst), ("best", best)):
        panels = []
        for s in chosen:
            info = run.coco_gt.imgs[s.image_id]
            try:
                image = load_image(Path(images_dir) / info["file_name"])
            except ImageReadError:
                continue
            gts = run.coco_gt.loadAnns(run.coco_gt.getAnnIds(imgIds=[s.image_id]))
            dts = [d for d in run.coco_dt.loadAnns(run.coco_dt.getAnnIds(imgIds=[s.image_id]))
                   if d["score"] >= score_threshold]
            image = _draw_ground_truth(image, _xyxy([g["bbox"] for g in gts]), [bool(g.get("iscrowd", 0)) for g in gts])
            image = draw_detections(image, _xyxy([d["bbox"] for d in dts]), np.array([d["score"] for d in dts]),
                                     [names[d["category_id"]] for d in dts])
            panels.append((image, f"{info['file_name']}\nF1 {s.f1:.2f}  TP {s.tp} FP {s.fp} FN {s.fn}"))
        if not panels:
            continue
        cols = min(4, len(panels))
        rows = (len(panels) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, (image, caption) in zip(axes.flat, panels):
            ax.imshow(image)
            ax.set_title(caption, fontsize=8)
        fig.suptitle(f"{title} images (IoU 0.5, score >= {score_threshold:g}; white: ground truth)")
        written.append(_save(fig, out / f"gallery_{title}.png"))
    return written


def _xyxy(xywh: list[list[float]]) -> np.ndarray:
    """COCO ``[x, y, w, h]`` boxes -> ``[N, 4]`` xyxy pixels."""
    return box_convert(torch.as_tensor(xywh, dtype=torch.float64).reshape(-1, 4), "xywh", "xyxy").numpy()


def sample_grid(dataset: CocoDetection, indices: Iterable[int], mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> tuple[np.ndarray, int]:
    """The samples ``indices`` of ``dataset`` as its transform returns them, boxes and names drawn.

    Args:
        dataset: items ``(FloatTensor[3, S, S] normalised with mean / std, {"boxes" [N, 4] xyxy
            pixels of that tensor, "labels" [N] in 1..K, "file_name"})``; unreadable items (None) are skipped.
        indices: which items, in grid order (row by row, as square as possible).

    Returns:
        ``(grid np.ndarray[rows * S, cols * S, 3] uint8 RGB, number of tiles)``; ``(empty [0, 0, 3], 0)``
        when no item could be read.
    """
    tiles = []
    for index in indices:
        item = dataset[int(index)]
        if item is None:
            continue
        image, target = item
        # Undo Normalize to get displayable uint8 RGB.
        rgb = np.clip((image.permute(1, 2, 0).numpy() * np.array(std) + np.array(mean)) * 255, 0, 255)
        names = [dataset.label_map.name_of_label(int(label)) for label in target["labels"]]
        tile = draw_detections(rgb.astype(np.uint8), target["boxes"].numpy(), None, names, color_key="class")
        cv2.putText(tile, target["file_name"], (4, tile.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    if not tiles:
        return np.zeros((0, 0, 3), np.uint8), 0
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    h, w = tiles[0].shape[:2]
    grid = np.full((rows * h, cols * w, 3), 32, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return grid, len(tiles)
