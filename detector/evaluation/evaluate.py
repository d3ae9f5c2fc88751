"""Evaluate a model on a COCO-format dataset (as detectron2's ``inference_on_dataset``).

    runner, label_map = detector.inference.load_runner("best.ckpt")      # or "model.onnx"
    run, results = evaluate_on_dataset(runner, label_map, "val/images", "val.json")
    run.metrics["AP"]

The model is any runner of :mod:`detector.inference`'s contract (``runner(images, image_sizes)``
with ``image_size``, ``mean``, ``std`` and ``device`` attributes): a PyTorch checkpoint and an ONNX
file are evaluated by the same code. :func:`evaluation_step` is the per-batch step, the one training
validation can call too (with ``model.predict`` or a closure over outputs it already computed).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detector.data.coco import CocoDetection, detection_collate
from detector.deploy.preprocess import ImagePreprocessor
from detector.evaluation.coco import Backend, CocoEvalRun, CocoEvaluator
from detector.labels import LabelMap, match_categories

__all__ = ["NetworkInput", "evaluate_on_dataset", "evaluate_predictor_on_dataset", "evaluation_notes", "evaluation_step"]

# runner(images FloatTensor[B, 3, H, W] normalised, [(h, w), ...]) -> B dicts in original pixels
Predict = Callable[[Tensor, Sequence[tuple[int, int]]], Sequence[Mapping[str, Any]]]


class NetworkInput:
    """The dataset transform of every evaluation: the network input exactly as
    :class:`detector.inference.Predictor` makes it, through the one
    :class:`detector.deploy.preprocess.ImagePreprocessor` (the model's recorded resize, ``"opencv"`` or
    TF's ``"tf_bilinear"``, then its normalisation), on the CPU of the loader's worker. Boxes are scaled to
    the input's pixels (for a validation loss). ``tools/eval.py`` (:meth:`for_runner`) and training's
    validation (:class:`detector.training.datamodule.DetectionDataModule`) both use it."""

    def __init__(self, image_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float],
                 resize: str = "opencv") -> None:
        self.preprocess = ImagePreprocessor(image_size, mean, std, "cpu", resize=resize)

    @classmethod
    def for_runner(cls, runner: Any) -> NetworkInput:
        return cls(runner.image_size, runner.mean, runner.std, getattr(runner, "resize", "opencv"))

    def __call__(self, image: Any, bboxes: Any, labels: Any, **_: Any) -> dict[str, Any]:
        height, width = image.shape[:2]
        out_h, out_w = self.preprocess.image_size
        scale = np.array([out_w / width, out_h / height, out_w / width, out_h / height], dtype=np.float32)
        return {"image": self.preprocess([image])[0], "bboxes": np.asarray(bboxes, np.float32).reshape(-1, 4) * scale,
                "labels": labels}


def evaluation_step(
    evaluator: CocoEvaluator, predict: Predict, images: Tensor, targets: Sequence[Mapping[str, Any]]
) -> Sequence[Mapping[str, Any]]:
    """One batch: predictions in each image's original pixels, fed to ``evaluator``.

    Args:
        evaluator: collects the batch (``process``).
        predict: a runner, or ``model.predict``: ``(images, [(h, w), ...]) -> [{"boxes" [N, 4] xyxy
            original pixels, "scores" [N], "labels" [N] in 1..K}, ...]``.
        images: ``FloatTensor[B, 3, H, W]`` normalised, as the dataset's eval transform gives it.
        targets: :class:`detector.data.coco.CocoDetection` targets (``image_id``, ``orig_size`` ``(h, w)``).

    Returns:
        The batch's predictions (empty when the batch is, e.g. every image of it unreadable).
    """
    if not targets:
        return []
    sizes = [(int(t["orig_size"][0]), int(t["orig_size"][1])) for t in targets]
    predictions = predict(images, sizes)
    evaluator.process([int(t["image_id"]) for t in targets], predictions)
    return predictions


def evaluate_on_dataset(
    runner: Any,
    label_map: LabelMap,
    images: str | PathLike[str],
    annotations: str | PathLike[str],
    *,
    batch_size: int = 32,
    num_workers: int = 2,
    backend: Backend = "pycocotools",
    progress: bool = True,
    class_map: dict[str, str] | None = None,
) -> tuple[CocoEvalRun, list[dict[str, Any]]]:
    """Run ``runner`` over every image of ``annotations`` and evaluate it with COCO's protocol.

    Args:
        runner: a runner (:mod:`detector.inference`): :func:`detector.inference.load_runner`'s.
        label_map: the model's labels -> category ids; they must be categories of ``annotations``.
        images: the folder ``annotations``' ``file_name`` entries are relative to.
        annotations: a COCO ground-truth JSON.
        batch_size, num_workers: the DataLoader's.
        backend: ``"pycocotools"`` or ``"faster-coco-eval"``.
        progress: a ``tqdm`` bar over the batches.
        class_map: the model's class names -> the file's category names, where they differ
            (``{"car": "vehicle", "truck": "vehicle"}``; :func:`detector.labels.match_categories`).

    Returns:
        The evaluation (``run.metrics``: :mod:`detector.evaluation.coco`'s keys; ``run.notes``: what
        differed, for the tool to print) and the COCO results list it scored (``bbox`` ``[x, y, w, h]``
        in original pixels, the file's category ids).

    Each image reaches the runner as :class:`detector.inference.Predictor` feeds it (:class:`NetworkInput`:
    the model's own resize, e.g. TF's bilinear for converted TF graphs), so the numbers are the
    Predictor's. Categories are matched **by name** (:func:`detector.labels.match_categories`): the file's ids are
    used whatever the model was trained with, and only the categories both know are scored; what
    differs is in ``run.notes``. Images that cannot be read (or are absent) are left out of the
    evaluation and named in ``run.notes``, as training's validation leaves them out.

    Raises:
        ValueError: no class of the model is a category of ``annotations`` (or the dataset's own
            errors: invalid JSON, too many missing images...).
    """
    from tqdm import tqdm

    dataset = CocoDetection(images, annotations, NetworkInput.for_runner(runner))
    match = match_categories(label_map, dataset.coco.dataset["categories"], str(annotations), class_map)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=detection_collate, pin_memory=torch.device(runner.device).type == "cuda",
    )
    evaluator = CocoEvaluator(dataset.coco, label_map=match, backend=backend)
    for batch_images, targets in tqdm(loader, desc="eval", unit="batch", disable=not progress):
        evaluation_step(evaluator, runner, batch_images, targets)
    evaluator.evaluate()
    assert evaluator.last_run is not None  # a single process evaluates on its own rank 0
    evaluator.last_run.notes.extend(evaluation_notes(dataset, match.describe(), evaluator.evaluated_images))
    return evaluator.last_run, evaluator.results()


def evaluation_notes(dataset: CocoDetection, categories: str, evaluated: Sequence[int]) -> list[str]:
    """The lines a summary prints beside the metrics: how the categories matched (when not exactly),
    and the listed images left out (absent, or unreadable), named."""
    notes = [categories] if categories else []
    scored = set(evaluated)
    unreadable = [dataset.coco.imgs[i]["file_name"] for i in dataset.ids if i not in scored]
    listed = len(dataset.coco.imgs)
    for what, names in (("unreadable", unreadable), ("missing", list(dataset.stats.missing))):
        if names:
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            notes.append(f"{len(names)} of the {listed} images of {dataset.annotation_file} left out ({what}): {shown}")
    return notes


def evaluate_predictor_on_dataset(
    predictor: Any,
    images: str | PathLike[str],
    annotations: str | PathLike[str],
    *,
    batch_size: int = 8,
    backend: Backend = "pycocotools",
    progress: bool = True,
    class_map: dict[str, str] | None = None,
) -> tuple[CocoEvalRun, list[dict[str, Any]]]:
    """:func:`evaluate_on_dataset` for a :class:`detector.inference.Predictor`, so its views of each
    image count: sliced inference and letterboxing (:mod:`detector.slicing`). Each image is decoded
    at its own size and given to ``predictor.predict_batch`` whole; one that fails to decode is
    left out and named in ``run.notes``. Same returns."""
    from tqdm import tqdm

    from detector.data.io import ImageReadError, load_image

    dataset = CocoDetection(images, annotations, transform=None)
    match = match_categories(predictor.label_map, dataset.coco.dataset["categories"], str(annotations), class_map)
    evaluator = CocoEvaluator(dataset.coco, label_map=match, backend=backend)
    for start in tqdm(range(0, len(dataset.ids), batch_size), desc="eval", unit="batch", disable=not progress):
        ids, arrays = [], []
        for image_id in dataset.ids[start:start + batch_size]:
            try:
                arrays.append(load_image(dataset.images_dir / dataset.coco.imgs[image_id]["file_name"]))
                ids.append(image_id)
            except ImageReadError:
                continue  # left out of the evaluation and named in run.notes
        if arrays:
            # The labels go through the name match; the Predictor's category ids are the model's own.
            outputs = predictor.predict_batch(arrays)
            evaluator.process(ids, [{k: v for k, v in out.items() if k != "category_ids"} for out in outputs])
    evaluator.evaluate()
    assert evaluator.last_run is not None
    evaluator.last_run.notes.extend(evaluation_notes(dataset, match.describe(), evaluator.evaluated_images))
    return evaluator.last_run, evaluator.results()
