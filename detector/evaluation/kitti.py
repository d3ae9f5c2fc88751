"""KITTI's official 2D bounding-box AP (the object benchmark's "2D" table), from COCO-format files.

The rules are those of KITTI's devkit (``cpp/evaluate_object.cpp``), re-implemented here because no
maintained library computes them for 2D detection (mmdetection3d's ``kitti_eval`` sits inside its 3D
stack); ``tests/evaluation/test_kitti.py`` proves equality with the devkit's C++ on the same boxes:

- classes Car, Pedestrian, Cyclist; a detection matches with IoU > 0.7 (Car) or > 0.5 (the others);
- difficulties easy / moderate / hard: ground truth at least 40 / 25 / 25 px tall, occluded at most
  0 / 1 / 2, truncated at most 0.15 / 0.3 / 0.5; other ground truth of the class is ignored (neither hit
  nor miss), and so are detections shorter than the height bound;
- neighbouring classes are ignored, not missed: Van for Car, Person_sitting for Pedestrian;
- a detection matched to no ground truth that lies inside a DontCare region (its area overlapping one
  by more than the IoU bound) is no false positive;
- precision is sampled at 41 score thresholds spaced evenly in recall, made monotone, and averaged over
  the 40 points above recall 0 (``AP|R40``, KITTI's metric since 2019) or over 11 points (the older
  ``AP|R11``).

Ground truth comes from a COCO file written by :func:`detector.data.converters.kitti_to_coco`, which
keeps each box's ``kitti_type``, ``truncated`` and ``occluded``; detections are COCO results whose
category names (of that file) are KITTI's class names.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DIFFICULTIES", "KITTI_CLASSES", "MIN_OVERLAP", "KittiBox", "format_kitti_table", "frames_from_coco",
           "kitti_ap", "kitti_metrics"]

KITTI_CLASSES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
MIN_OVERLAP: dict[str, float] = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
NEIGHBOURS: dict[str, str] = {"car": "van", "pedestrian": "person_sitting"}
# name -> (minimum box height px, maximum occlusion level, maximum truncation)
DIFFICULTIES: dict[str, tuple[float, int, float]] = {"easy": (40, 0, 0.15), "moderate": (25, 1, 0.3),
                                                     "hard": (25, 2, 0.5)}
SAMPLE_POINTS = 41
DONT_CARE = "dontcare"


@dataclass(frozen=True)
class KittiBox:
    """One object or detection: ``kind`` (KITTI type), ``box`` ``(x1, y1, x2, y2)`` pixels, ``truncated``,
    ``occluded`` (ground truth) or ``score`` (detection)."""

    kind: str
    box: tuple[float, float, float, float]
    truncated: float = 0.0
    occluded: int = 0
    score: float = 0.0


def _overlaps(a: np.ndarray, b: np.ndarray, over_first: bool = False) -> np.ndarray:
    """``[len(a), len(b)]``: IoU of xyxy boxes, or the intersection over ``a``'s area (``over_first``:
    the devkit's overlap of a detection with a DontCare region). Areas are ``(x2 - x1) * (y2 - y1)``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((width > 0) & (height > 0), width * height, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    if over_first:
        return inter / area_a[:, None]
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


@dataclass
class _Frame:
    """One frame prepared for one class and difficulty."""

    gt_state: np.ndarray      # per ground truth: 0 counted, 1 ignored, -1 not this class
    det_state: np.ndarray     # per detection: 0 counted, 1 ignored (too short), -1 not this class
    scores: np.ndarray
    iou: np.ndarray           # [detections, ground truth]
    dont_care: np.ndarray     # [detections, DontCare regions]: intersection over the detection's area


def _prepare(gt: Sequence[KittiBox], det: Sequence[KittiBox], cls: str, difficulty: str) -> tuple[_Frame, int]:
    min_height, max_occlusion, max_truncation = DIFFICULTIES[difficulty]
    name, neighbour = cls.lower(), NEIGHBOURS.get(cls.lower())
    gt_state, counted = [], 0
    for obj in gt:
        kind = obj.kind.lower()
        too_hard = (obj.occluded > max_occlusion or obj.truncated > max_truncation
                    or obj.box[3] - obj.box[1] < min_height)
        if kind == name and not too_hard:
            gt_state.append(0)
            counted += 1
        elif kind == neighbour or kind == name:
            gt_state.append(1)
        else:
            gt_state.append(-1)
    det_state = []
    for d in det:
        if int(abs(d.box[1] - d.box[3])) < min_height:  # the devkit truncates the height to an int
            det_state.append(1)
        else:
            det_state.append(0 if d.kind.lower() == name else -1)
    det_boxes = np.array([d.box for d in det], dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.array([o.box for o in gt], dtype=np.float64).reshape(-1, 4)
    dc_boxes = np.array([o.box for o in gt if o.kind.lower() == DONT_CARE], dtype=np.float64).reshape(-1, 4)
    frame = _Frame(np.array(gt_state, dtype=np.int64), np.array(det_state, dtype=np.int64),
                   np.array([d.score for d in det], dtype=np.float64), _overlaps(det_boxes, gt_boxes),
                   _overlaps(det_boxes, dc_boxes, over_first=True))
    return frame, counted


def _match(frame: _Frame, bound: float, threshold: float | None) -> tuple[int, int, int, list[float]]:
    """The devkit's assignment in one frame: ``(tp, fp, fn, scores of the true positives)``. With
    ``threshold`` None it only collects the true positives' scores (each ground truth takes the
    highest-scoring overlapping detection); else detections below ``threshold`` are left out and each
    ground truth takes the most overlapping one."""
    n_det = len(frame.scores)
    assigned = np.zeros(n_det, dtype=bool)
    below = np.zeros(n_det, dtype=bool) if threshold is None else frame.scores < threshold
    tp = fn = 0
    tp_scores: list[float] = []
    for g, state in enumerate(frame.gt_state):
        if state == -1:
            continue
        chosen, found, best_overlap, took_ignored = -1, False, 0.0, False
        for j in range(n_det):
            if frame.det_state[j] == -1 or assigned[j] or below[j]:
                continue
            overlap = frame.iou[j, g]
            if overlap <= bound:
                continue
            if threshold is None:
                if not found or frame.scores[j] > frame.scores[chosen]:
                    chosen, found = j, True
            elif frame.det_state[j] == 0 and (overlap > best_overlap or took_ignored):
                chosen, found, best_overlap, took_ignored = j, True, overlap, False
            elif not found and frame.det_state[j] == 1:
                chosen, found, took_ignored = j, True, True
        if not found:
            fn += int(state == 0)
        elif state == 1 or frame.det_state[chosen] == 1:
            assigned[chosen] = True
        else:
            tp += 1
            tp_scores.append(float(frame.scores[chosen]))
            assigned[chosen] = True
    if threshold is None:
        return tp, 0, fn, tp_scores
    free = ~assigned & (frame.det_state == 0) & ~below
    fp = int(free.sum())
    if frame.dont_care.shape[1]:
        fp -= int((free & (frame.dont_care > bound).any(axis=1)).sum())
    return tp, fp, fn, tp_scores


def _thresholds(scores: list[float], counted: int) -> list[float]:
    """The scores at which recall passes each of the 41 evenly spaced recall levels (the devkit's rule)."""
    scores = sorted(scores, reverse=True)
    chosen, current = [], 0.0
    for i, score in enumerate(scores):
        left = (i + 1) / counted
        right = (i + 2) / counted if i < len(scores) - 1 else left
        if right - current < current - left and i < len(scores) - 1:
            continue
        chosen.append(score)
        current += 1.0 / (SAMPLE_POINTS - 1.0)
    return chosen


def kitti_ap(gt_frames: Sequence[Sequence[KittiBox]], det_frames: Sequence[Sequence[KittiBox]], cls: str,
             difficulty: str, min_overlap: Mapping[str, float] | None = None) -> np.ndarray:
    """The 41-point precision curve of ``cls`` at ``difficulty`` over the frames (index ``i``: recall
    ``i / 40``), made monotone as the devkit does."""
    if len(gt_frames) != len(det_frames):
        raise ValueError(f"{len(gt_frames)} ground-truth frames for {len(det_frames)} detection frames")
    bound = (min_overlap or MIN_OVERLAP)[cls]
    frames, counted, scores = [], 0, []
    for gt, det in zip(gt_frames, det_frames):
        frame, n = _prepare(gt, det, cls, difficulty)
        frames.append(frame)
        counted += n
        scores.extend(_match(frame, bound, None)[3])
    precision = np.zeros(SAMPLE_POINTS)
    if counted == 0:
        return precision
    thresholds = _thresholds(scores, counted)
    for t, threshold in enumerate(thresholds):
        tp = fp = 0
        for frame in frames:
            frame_tp, frame_fp, _, _ = _match(frame, bound, threshold)
            tp, fp = tp + frame_tp, fp + frame_fp
        precision[t] = tp / (tp + fp) if tp + fp else 0.0
    for t in range(len(thresholds)):
        precision[t] = precision[t:].max()
    return precision


def kitti_metrics(gt_frames: Sequence[Sequence[KittiBox]], det_frames: Sequence[Sequence[KittiBox]],
                  classes: Iterable[str] = KITTI_CLASSES, recall_points: int = 40) -> dict[str, Any]:
    """``{"kitti/<Class>/<difficulty>": AP (0..1), ...}`` with ``recall_points`` 40 (``AP|R40``) or 11, and
    ``"kitti/precision"``: the 41-point curves."""
    if recall_points not in (40, 11):
        raise ValueError(f"recall_points must be 40 or 11, got {recall_points}")
    metrics: dict[str, Any] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    for cls in classes:
        curves[cls] = {}
        for difficulty in DIFFICULTIES:
            precision = kitti_ap(gt_frames, det_frames, cls, difficulty)
            curves[cls][difficulty] = precision.tolist()
            ap = precision[1:].sum() / 40 if recall_points == 40 else precision[::4].sum() / 11
            metrics[f"kitti/{cls}/{difficulty}"] = float(ap)
    metrics["kitti/recall_points"] = recall_points
    metrics["kitti/precision"] = curves
    return metrics


def frames_from_coco(ground_truth: Mapping[str, Any], results: Sequence[Mapping[str, Any]],
                     image_ids: Sequence[int] | None = None) -> tuple[list[list[KittiBox]], list[list[KittiBox]]]:
    """Ground truth and detections per image, as KITTI sees them.

    Ground truth: each annotation's ``kitti_type`` (its category's name when absent), ``truncated`` and
    ``occluded`` (KITTI's converter keeps them); an ignore region of the converter (``"ignore_region"``,
    repeated once per category) counts once, as its ``kitti_type`` (``DontCare`` regions stay DontCare).
    Detections: the results' category names in that file (``bbox`` ``[x, y, w, h]``)."""
    names = {int(c["id"]): str(c["name"]) for c in ground_truth["categories"]}
    ids = sorted(int(i["id"]) for i in ground_truth["images"]) if image_ids is None else list(image_ids)
    gt: dict[int, list[KittiBox]] = {i: [] for i in ids}
    seen_regions: set[tuple[int, tuple[float, ...]]] = set()
    for ann in ground_truth["annotations"]:
        image_id = int(ann["image_id"])
        if image_id not in gt:
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = (x, y, x + w, y + h)
        if ann.get("ignore_region"):
            key = (image_id, box)
            if key in seen_regions:
                continue
            seen_regions.add(key)
            kind = str(ann.get("kitti_type", "DontCare"))
        else:
            kind = str(ann.get("kitti_type", names[int(ann["category_id"])]))
        gt[image_id].append(KittiBox(kind, box, float(ann.get("truncated", 0.0)), int(ann.get("occluded", 0))))
    det: dict[int, list[KittiBox]] = {i: [] for i in ids}
    for r in results:
        image_id = int(r["image_id"])
        if image_id in det:
            x, y, w, h = (float(v) for v in r["bbox"])
            det[image_id].append(KittiBox(names.get(int(r["category_id"]), "?"), (x, y, x + w, y + h),
                                          score=float(r["score"])))
    return [gt[i] for i in ids], [det[i] for i in ids]


def format_kitti_table(metrics: Mapping[str, Any]) -> str:
    """KITTI's 2D table: AP in percent per class and difficulty."""
    points = metrics.get("kitti/recall_points", 40)
    lines = [f"KITTI 2D AP|R{points} (%)   easy  moderate    hard"]
    for cls in KITTI_CLASSES:
        if f"kitti/{cls}/easy" in metrics:
            values = [metrics[f"kitti/{cls}/{d}"] * 100 for d in DIFFICULTIES]
            lines.append(f"{cls:<20} {values[0]:7.2f} {values[1]:9.2f} {values[2]:7.2f}")
    return "\n".join(lines)
