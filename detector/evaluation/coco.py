"""COCO box evaluation with pycocotools (the reference) or faster-coco-eval (the same numbers, faster).

Two entry points:

- :class:`CocoEvaluator` collects predictions batch by batch (``reset`` / ``process`` /
  ``evaluate``), the shape Lightning validation needs, and gathers them across DDP ranks.
- :func:`evaluate_detections` evaluates an existing COCO results list or file.

Both return the same ``metrics`` dict (the ``metrics.json`` of ``tools/eval.py``)::

    {"AP": .., "AP50": .., "AP75": .., "APs": .., "APm": .., "APl": ..,
     "AR1": .., "AR10": .., "AR100": .., "ARs": .., "ARm": .., "ARl": ..,   # COCOeval.stats[0..11]
     "per_class": {name: {"AP": .., "AP50": .., "gt": int}},
     "num_images": int, "num_detections": int}

Every number comes from the backend's own ``COCOeval``: ``stats`` for the twelve summary values
and ``eval["precision"]`` for the per-class ones. ``-1`` means "nothing to measure" exactly as
pycocotools uses it (an area range or a category with no ground truth in the evaluated images).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torchvision.ops import box_convert

from detector.arrays import to_numpy
from detector.labels import CategoryMatch, LabelMap

__all__ = [
    "BACKENDS",
    "COCO_STATS_KEYS",
    "CocoEvalRun",
    "CocoEvaluator",
    "evaluate_detections",
    "format_per_class_table",
    "format_summary",
    "load_ground_truth",
    "load_results",
    "predictions_to_results",
    "print_report",
    "run_coco_eval",
]

Backend = Literal["pycocotools", "faster-coco-eval"]
BACKENDS: tuple[str, ...] = ("pycocotools", "faster-coco-eval")

#: The names of ``COCOeval.stats[0..11]``, in that order: the summary keys of ``metrics.json``.
COCO_STATS_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

# pycocotools' summarize() lines (iouThr, area, maxDets) for stats[0..11]; used to print the same text.
_SUMMARY_ROWS: tuple[tuple[str, str, str, str, int], ...] = (
    ("Average Precision", "(AP)", "0.50:0.95", "all", 100),
    ("Average Precision", "(AP)", "0.50", "all", 100),
    ("Average Precision", "(AP)", "0.75", "all", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "small", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "medium", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "large", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 1),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 10),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "small", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "medium", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "large", 100),
)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def _coco_class(backend: str) -> type:
    _check_backend(backend)
    if backend == "pycocotools":
        from pycocotools.coco import COCO
    else:
        from faster_coco_eval import COCO
    return COCO


def _cocoeval_class(backend: str) -> type:
    _check_backend(backend)
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCOeval_faster as COCOeval
    return COCOeval


def _coco_from_dataset(dataset: dict[str, Any], backend: str) -> Any:
    """A backend ``COCO`` indexed over ``dataset`` (no copy; pycocotools prints, so keep it quiet)."""
    coco = _coco_class(backend)()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_ground_truth(
    ground_truth: str | os.PathLike[str] | dict[str, Any] | Any, backend: Backend = "pycocotools"
) -> Any:
    """The ground truth as the backend's ``COCO`` object.

    Args:
        ground_truth: a COCO annotation file, its parsed ``dict``, or a ``COCO`` object of either
            library (its ``dataset`` is re-indexed, not copied, when the library differs).
        backend: ``"pycocotools"`` or ``"faster-coco-eval"``.
    """
    coco_cls = _coco_class(backend)
    if isinstance(ground_truth, coco_cls):
        return ground_truth
    if isinstance(ground_truth, (str, os.PathLike)):
        dataset = _read_json(ground_truth, "annotation file")
        if not isinstance(dataset, dict):
            raise ValueError(f"annotation file {str(ground_truth)!r} is not a COCO dataset (a JSON object)")
    elif isinstance(ground_truth, dict):
        dataset = ground_truth
    elif hasattr(ground_truth, "dataset") and isinstance(ground_truth.dataset, dict):
        dataset = ground_truth.dataset
    else:
        raise TypeError(f"ground truth must be a path, a dict or a COCO object, got {type(ground_truth).__name__}")
    if "images" not in dataset or "categories" not in dataset:
        raise ValueError("ground truth is not COCO format: it needs 'images' and 'categories'")
    dataset.setdefault("annotations", [])
    return _coco_from_dataset(dataset, backend)


def _read_json(path: str | os.PathLike[str], what: str) -> Any:
    """A JSON file's content; ``FileNotFoundError`` or ``ValueError`` naming the file and what it is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {err}") from err


def _is_box_result(entry: Any) -> bool:
    """A COCO box result: ``image_id``, ``category_id``, ``bbox`` of 4 finite numbers, a finite ``score``."""
    if not isinstance(entry, Mapping) or not {"image_id", "category_id", "bbox", "score"} <= entry.keys():
        return False
    bbox, score = entry["bbox"], entry["score"]
    numbers = [*bbox, score] if isinstance(bbox, (list, tuple)) and len(bbox) == 4 else []
    return bool(numbers) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                 for v in numbers)


def _preview(items: Sequence[Any], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_results(
    coco_gt: Any, results: str | os.PathLike[str] | Sequence[Mapping[str, Any]], backend: Backend = "pycocotools"
) -> Any:
    """COCO results (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``) as a ``COCO``.

    Unlike ``COCO.loadRes`` this accepts an empty list (pycocotools' ``loadRes`` fails on one) and
    says which image or category ids are unknown instead of a bare assertion. The caller's dicts
    are not modified (``loadRes`` adds ``area``, ``id``, ``iscrowd`` and ``segmentation`` in place).

    Raises:
        ValueError: an ``image_id`` not in the ground truth or a ``category_id`` not in its
            ``categories`` (the ids are named), or a results entry without a box.
    """
    source = "results"
    if isinstance(results, (str, os.PathLike)):
        source = f"detections file {str(results)!r}"
        results = _read_json(results, "detections file")
        if not isinstance(results, list):
            raise ValueError(f"{source} is not a COCO results list (a JSON array)")
    bad = [i for i, r in enumerate(results) if not _is_box_result(r)]
    if bad:
        raise ValueError(
            f"{source}: entries {_preview(bad)} are not COCO box results (objects with image_id, category_id, "
            "bbox = 4 finite numbers [x, y, w, h], and a finite score)"
        )
    anns = [dict(r) for r in results]
    unknown_images = sorted({a["image_id"] for a in anns} - set(coco_gt.getImgIds()))
    if unknown_images:
        raise ValueError(
            f"detections refer to image id(s) {_preview(unknown_images)} that are not in the ground truth "
            f"({len(coco_gt.getImgIds())} images); are the detections for another annotation file?"
        )
    unknown_cats = sorted({a["category_id"] for a in anns} - set(coco_gt.getCatIds()))
    if unknown_cats:
        raise ValueError(
            f"detections use category id(s) {_preview(unknown_cats)} that are not in the ground truth's categories "
            f"{_preview(sorted(coco_gt.getCatIds()))}; contiguous labels must be mapped to category ids"
        )
    if not anns:
        # What loadRes would build: the ground truth's images and categories, no annotations.
        dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                   "annotations": []}
        return _coco_from_dataset(dataset, backend)
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes(anns)


@dataclass
class CocoEvalRun:
    """One evaluation: the metrics and the objects behind them (for plots and galleries).

    ``coco_eval.eval["precision"]`` is ``[T, R, K, A, M]`` (IoU thresholds 0.50:0.05:0.95, 101
    recall thresholds, categories in ``coco_eval.params.catIds`` order, areas all/small/medium/large,
    maxDets 1/10/100), ``-1`` where a category has no ground truth.
    """

    metrics: dict[str, Any]
    coco_gt: Any
    coco_dt: Any
    coco_eval: Any
    backend: str
    notes: list[str] = field(default_factory=list)  # what the tools print beside the metrics (left-out images...)


def _category_names(coco_gt: Any, cat_ids: Sequence[int]) -> dict[int, str]:
    """Category id -> name; a repeated name gets its id appended so per_class keys stay unique."""
    names = {int(c): str(coco_gt.cats[c].get("name", c)) for c in cat_ids}
    counts: dict[str, int] = {}
    for n in names.values():
        counts[n] = counts.get(n, 0) + 1
    return {c: (n if counts[n] == 1 else f"{n} ({c})") for c, n in names.items()}


def _per_class(coco_gt: Any, coco_eval: Any, image_ids: Sequence[int]) -> dict[str, dict[str, float | int]]:
    """``{name: {"AP", "AP50", "gt"}}`` from ``eval["precision"]`` (area "all", maxDets 100).

    AP averages the precision over IoU and recall thresholds as pycocotools' summarize does for
    all categories; ``gt`` counts the non-crowd boxes of the evaluated images (crowd regions are
    ignored by the matching, not counted as misses).
    """
    params = coco_eval.params
    precision = np.asarray(coco_eval.eval["precision"])  # [T, R, K, A, M]
    iou50 = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
    all_area = list(params.areaRngLbl).index("all")
    max_det = len(params.maxDets) - 1
    wanted = set(int(i) for i in image_ids)
    gt_counts: dict[int, int] = {int(c): 0 for c in params.catIds}
    for ann in coco_gt.dataset["annotations"]:
        if ann["image_id"] in wanted and not ann.get("iscrowd", 0) and ann["category_id"] in gt_counts:
            gt_counts[ann["category_id"]] += 1
    names = _category_names(coco_gt, params.catIds)
    table: dict[str, dict[str, float | int]] = {}
    for k, cat_id in enumerate(params.catIds):
        p = precision[:, :, k, all_area, max_det]
        p50 = p[iou50]
        table[names[int(cat_id)]] = {
            "AP": float(np.mean(p[p > -1])) if (p > -1).any() else -1.0,
            "AP50": float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else -1.0,
            "gt": gt_counts[int(cat_id)],
        }
    return table


def run_coco_eval(
    ground_truth: Any,
    results: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    backend: Backend = "pycocotools",
    image_ids: Iterable[int] | None = None,
    category_ids: Iterable[int] | None = None,
) -> CocoEvalRun:
    """Evaluate COCO box results; returns the metrics and the COCO / COCOeval objects.

    Args:
        ground_truth: annotation file, dict, or ``COCO`` object (see :func:`load_ground_truth`).
        results: COCO results list or JSON file; boxes are ``[x, y, w, h]`` in original pixels.
        backend: ``"pycocotools"`` (the reference) or ``"faster-coco-eval"``.
        image_ids: the images to evaluate; ``None`` means every image of the ground truth, so an
            image without detections counts as all misses (the official protocol).
        category_ids: the categories to score (``COCOeval.params.catIds``); ``None``: every category of
            the ground truth. A model scored on a set with other classes too gives the ones both know
            (:class:`detector.labels.CategoryMatch`).
    """
    coco_gt = load_ground_truth(ground_truth, backend)
    coco_dt = load_results(coco_gt, results, backend)
    coco_eval = _cocoeval_class(backend)(coco_gt, coco_dt, "bbox")
    ids = sorted(coco_gt.getImgIds()) if image_ids is None else sorted({int(i) for i in image_ids})
    # pycocotools reads an empty imgIds as "all images"; an empty evaluation is all -1 instead.
    coco_eval.params.imgIds = ids if ids else [-1]
    if category_ids is not None:
        coco_eval.params.catIds = sorted({int(c) for c in category_ids})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates each step on stdout
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = [float(s) for s in coco_eval.stats[: len(COCO_STATS_KEYS)]]
    metrics: dict[str, Any] = dict(zip(COCO_STATS_KEYS, stats))
    metrics["per_class"] = _per_class(coco_gt, coco_eval, ids)
    wanted = set(ids)
    metrics["num_images"] = len(ids)
    metrics["num_detections"] = sum(1 for a in coco_dt.dataset["annotations"] if a["image_id"] in wanted)
    return CocoEvalRun(metrics, coco_gt, coco_dt, coco_eval, backend)


def evaluate_detections(
    ground_truth: Any,
    detections: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    backend: Backend = "pycocotools",
    image_ids: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Metrics of an existing COCO results list or file against ``ground_truth`` (every image by default).

    >>> m = evaluate_detections("instances_val.json", "detections.json")  # doctest: +SKIP
    >>> m["AP"], m["per_class"]["person"]["AP50"]  # doctest: +SKIP
    """
    return run_coco_eval(ground_truth, detections, backend=backend, image_ids=image_ids).metrics


def predictions_to_results(
    image_ids: Sequence[int], predictions: Sequence[Mapping[str, Any]], label_map: LabelMap | None = None
) -> list[dict[str, Any]]:
    """Per-image predictions -> a COCO results list (``bbox`` ``[x, y, w, h]``, the user's category ids).

    Args:
        image_ids: one COCO image id per prediction.
        predictions: ``{"boxes": [N, 4] xyxy original pixels, "scores": [N], "labels": [N] in 1..K}``
            (tensors or arrays); ``"category_ids": [N]`` may replace ``"labels"``.
        label_map: maps ``labels`` to category ids; needed when ``labels`` are given.
    """
    arrays = _to_arrays(image_ids, predictions, label_map)
    return [r for image_id, rows in arrays for r in _rows_to_results(image_id, rows)]


def _to_arrays(
    image_ids: Sequence[int], predictions: Sequence[Mapping[str, Any]], label_map: LabelMap | CategoryMatch | None
) -> list[tuple[int, np.ndarray]]:
    """Each prediction as ``(image_id, float64 [N, 6] = x, y, w, h, score, category_id)``; detections of a
    class that ``label_map`` (a :class:`CategoryMatch`) maps to no category (id -1) are left out."""
    if len(image_ids) != len(predictions):
        raise ValueError(f"{len(image_ids)} image ids for {len(predictions)} predictions")
    out = []
    for image_id, pred in zip(image_ids, predictions):
        # float64 before xyxy -> xywh so that the widths are exact and a saved results file evaluates the same.
        boxes = torch.as_tensor(to_numpy(pred["boxes"], np.float64, (4,)))
        scores = to_numpy(pred["scores"], np.float64)
        if "category_ids" in pred:
            cats = to_numpy(pred["category_ids"], np.int64)
        elif "labels" in pred:
            if label_map is None:
                raise ValueError(
                    "predictions carry contiguous 'labels': give the evaluator a LabelMap, or pass 'category_ids'"
                )
            labels = to_numpy(pred["labels"], np.int64)
            if labels.size and (labels.min() < 1 or labels.max() > len(label_map.category_ids)):
                raise ValueError(
                    f"image {image_id}: labels must be in 1..{len(label_map.category_ids)} (0 is background), "
                    f"got {sorted(set(labels.tolist()))[:20]}"
                )
            cats = np.asarray(label_map.category_ids, dtype=np.int64)[labels - 1]
        else:
            raise ValueError(f"image {image_id}: a prediction needs 'labels' or 'category_ids'")
        if not (len(boxes) == len(scores) == len(cats)):
            raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(cats)} labels")
        xywh = box_convert(boxes, "xyxy", "xywh").numpy()
        keep = cats >= 0
        out.append((int(image_id), np.column_stack([xywh, scores, cats.astype(np.float64)])[keep]))
    return out


def _rows_to_results(image_id: int, rows: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"image_id": image_id, "category_id": int(r[5]), "bbox": [float(v) for v in r[:4]], "score": float(r[4])}
        for r in rows
    ]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CocoEvaluator:
    """COCO box evaluator fed batch by batch: ``reset()``, ``process(...)`` per batch, ``evaluate()``.

    In Lightning: ``reset`` in ``on_validation_epoch_start``, ``process`` in ``validation_step``,
    ``evaluate`` in ``on_validation_epoch_end``. Only the images passed to ``process`` are evaluated
    (so ``limit_val_batches`` gives the metrics of that subset) unless ``all_images=True``.

    Under ``torch.distributed`` (initialised, world size > 1) ``evaluate`` gathers every rank's
    predictions with ``all_gather_object``, keeps the first copy of each image id (a
    ``DistributedSampler`` pads the last batch with repeated images) and evaluates on rank 0 only;
    the metrics dict is then broadcast, so every rank returns the same dict (and an error on rank 0
    is raised on every rank instead of leaving the others waiting). It is a collective call: every
    rank must call ``evaluate``.

    Example::

        evaluator = CocoEvaluator("instances_val.json", label_map=label_map)
        for images, targets in loader:
            preds = model.predict(images, [t["orig_size"] for t in targets])
            evaluator.process([t["image_id"] for t in targets], preds)
        metrics = evaluator.evaluate()  # {"AP": ..., "AP50": ..., "per_class": {...}, ...}
    """

    def __init__(
        self,
        ground_truth: str | os.PathLike[str] | dict[str, Any] | Any,
        label_map: LabelMap | CategoryMatch | None = None,
        backend: Backend = "pycocotools",
        *,
        all_images: bool = False,
        category_ids: Sequence[int] | None = None,
    ) -> None:
        """
        Args:
            ground_truth: COCO annotation file, its dict, or a ``COCO`` object (pycocotools or
                faster-coco-eval).
            label_map: maps contiguous ``labels`` (1..K) to the ground truth's category ids;
                optional when predictions carry ``category_ids``.
            backend: ``"pycocotools"`` (the reference) or ``"faster-coco-eval"`` (same numbers, faster).
            all_images: evaluate every ground-truth image, counting the unprocessed ones as misses.
            category_ids: the categories to score (default: a :class:`CategoryMatch`'s ``evaluated_ids``,
                else every category of the ground truth).
        """
        _check_backend(backend)
        self.backend = backend
        self.coco_gt = load_ground_truth(ground_truth, backend)
        self.label_map = label_map
        self.all_images = all_images
        if category_ids is None and isinstance(label_map, CategoryMatch):
            category_ids = label_map.evaluated_ids
        self.category_ids = None if category_ids is None else tuple(category_ids)
        self.evaluated_images: list[int] = []  # after evaluate(), on rank 0: the image ids scored
        self.last_run: CocoEvalRun | None = None
        self._predictions: dict[int, np.ndarray] = {}

    def reset(self) -> None:
        """Forget the processed predictions (call at the start of each evaluation)."""
        self._predictions = {}

    def process(self, image_ids: Sequence[int], predictions: Sequence[Mapping[str, Any]]) -> None:
        """Add one batch.

        Args:
            image_ids: COCO image id of each prediction.
            predictions: per image ``{"boxes": FloatTensor[N, 4] xyxy in original image pixels,
                "scores": [N], "labels": Int64Tensor[N] in 1..K}`` (tensors or arrays;
                ``"category_ids"`` may replace ``"labels"``). An image seen twice keeps its first
                predictions, as across ranks.
        """
        for image_id, rows in _to_arrays(image_ids, predictions, self.label_map):
            self._predictions.setdefault(image_id, rows)

    def results(self) -> list[dict[str, Any]]:
        """This process's predictions as a COCO results list (``bbox`` ``[x, y, w, h]``, category ids),
        sorted by image id; exactly what ``evaluate`` scores in a single process."""
        return [r for image_id, rows in sorted(self._predictions.items()) for r in _rows_to_results(image_id, rows)]

    @property
    def num_processed(self) -> int:
        """Distinct images processed in this process."""
        return len(self._predictions)

    def _gathered(self) -> dict[int, np.ndarray]:
        if not _distributed():
            return self._predictions
        parts: list[dict[int, np.ndarray] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self._predictions)
        merged: dict[int, np.ndarray] = {}
        for part in parts:  # rank order: rank 0's copy of a padded image wins
            for image_id, rows in (part or {}).items():
                merged.setdefault(image_id, rows)
        return merged

    def evaluate(self) -> dict[str, Any]:
        """Gather (under DDP), evaluate, and return the metrics dict described in the module docstring.

        ``self.last_run`` holds the :class:`CocoEvalRun` on rank 0 (``None`` on the other ranks).
        """
        predictions = self._gathered()
        outcome: dict[str, Any] | BaseException
        self.last_run = None
        if not _distributed() or dist.get_rank() == 0:
            try:
                results = [r for i, rows in sorted(predictions.items()) for r in _rows_to_results(i, rows)]
                image_ids = None if self.all_images else sorted(predictions)
                self.evaluated_images = sorted(self.coco_gt.getImgIds()) if self.all_images else sorted(predictions)
                self.last_run = run_coco_eval(self.coco_gt, results, backend=self.backend, image_ids=image_ids,
                                              category_ids=self.category_ids)
                outcome = self.last_run.metrics
            except Exception as err:  # re-raised below on every rank
                if not _distributed():
                    raise
                outcome = err
        if _distributed():
            box = [outcome if dist.get_rank() == 0 else None]
            dist.broadcast_object_list(box, src=0)
            outcome = box[0]
            if isinstance(outcome, BaseException):
                raise RuntimeError(f"COCO evaluation failed on rank 0: {outcome}") from outcome
        return outcome


def format_summary(metrics: Mapping[str, Any]) -> str:
    """The twelve ``COCOeval.summarize()`` lines, from a metrics dict (same text as pycocotools)."""
    lines = []
    for key, (title, short, iou, area, max_dets) in zip(COCO_STATS_KEYS, _SUMMARY_ROWS):
        lines.append(
            f" {title:<18} {short} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = {metrics[key]:0.3f}"
        )
    return "\n".join(lines)


def format_per_class_table(metrics: Mapping[str, Any]) -> str:
    """A per-class table (AP, AP50 in percent, ground-truth count); ``-`` where a class has no ground truth."""
    per_class = metrics["per_class"]
    width = max([5] + [len(n) for n in per_class])

    def pct(v: float) -> str:
        return f"{100 * v:6.1f}" if v >= 0 else f"{'-':>6}"

    lines = [f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}  {'gt':>6}"]
    lines.append("-" * len(lines[0]))
    for name, row in per_class.items():
        lines.append(f"{name:<{width}}  {pct(row['AP'])}  {pct(row['AP50'])}  {row['gt']:>6d}")
    return "\n".join(lines)


def print_report(metrics: Mapping[str, Any], file: Any = None) -> None:
    """Print the 12-line COCO summary, then the per-class table."""
    print(format_summary(metrics), file=file)
    print(file=file)
    print(format_per_class_table(metrics), file=file)
    print(f"\n{metrics['num_images']} images, {metrics['num_detections']} detections", file=file)
