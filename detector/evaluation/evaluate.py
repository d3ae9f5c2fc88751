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

import torch
from torch import Tensor

from detector.data.coco import CocoDetection, detection_collate
from detector.data.transforms import build_transforms
from detector.evaluation.coco import Backend, CocoEvalRun, CocoEvaluator
from detector.labels import LabelMap

__all__ = ["evaluate_on_dataset", "evaluate_predictor_on_dataset", "evaluation_step"]

# runner(images FloatTensor[B, 3, H, W] normalised, [(h, w), ...]) -> B dicts in original pixels
Predict = Callable[[Tensor, Sequence[tuple[int, int]]], Sequence[Mapping[str, Any]]]


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

    Returns:
        The evaluation (``run.metrics``: :mod:`detector.evaluation.coco`'s keys) and the COCO results
        list it scored (``bbox`` ``[x, y, w, h]`` in original pixels, the user's category ids).
        Every annotated image counts: one that fails to decode is scored as all misses, not skipped.

    Raises:
        ValueError: the model predicts category ids that ``annotations`` does not list (or the
            dataset's own errors: invalid JSON, missing images...).
    """
    from tqdm import tqdm

    transform = build_transforms("none", image_size=runner.image_size, train=False, mean=runner.mean, std=runner.std)
    dataset = CocoDetection(images, annotations, transform)
    _check_categories(label_map, dataset, annotations)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=detection_collate, pin_memory=torch.device(runner.device).type == "cuda",
    )
    evaluator = CocoEvaluator(dataset.coco, label_map=label_map, backend=backend, all_images=True)
    for batch_images, targets in tqdm(loader, desc="eval", unit="batch", disable=not progress):
        evaluation_step(evaluator, runner, batch_images, targets)
    evaluator.evaluate()
    assert evaluator.last_run is not None  # a single process evaluates on its own rank 0
    return evaluator.last_run, evaluator.results()


def _check_categories(label_map: LabelMap, dataset: CocoDetection, annotations: str | PathLike[str]) -> None:
    missing = sorted(set(label_map.category_ids) - set(dataset.coco.getCatIds()))
    if missing:
        raise ValueError(
            f"the model predicts category id(s) {missing} that {annotations} does not list; "
            f"it was trained on other categories ({list(label_map.names)[:10]}...)"
        )


def evaluate_predictor_on_dataset(
    predictor: Any,
    images: str | PathLike[str],
    annotations: str | PathLike[str],
    *,
    batch_size: int = 8,
    backend: Backend = "pycocotools",
    progress: bool = True,
) -> tuple[CocoEvalRun, list[dict[str, Any]]]:
    """:func:`evaluate_on_dataset` for a :class:`detector.inference.Predictor`, so its views of each
    image count: sliced inference and letterboxing (:mod:`detector.slicing`). Each image is decoded
    at its own size and given to ``predictor.predict_batch`` whole; one that fails to decode is
    named in a warning and scored as all misses. Same returns."""
    import warnings

    from tqdm import tqdm

    from detector.data.io import ImageReadError, load_image

    dataset = CocoDetection(images, annotations, transform=None)
    label_map = predictor.label_map
    _check_categories(label_map, dataset, annotations)
    evaluator = CocoEvaluator(dataset.coco, label_map=label_map, backend=backend, all_images=True)
    unreadable = 0
    for start in tqdm(range(0, len(dataset.ids), batch_size), desc="eval", unit="batch", disable=not progress):
        ids, arrays = [], []
        for image_id in dataset.ids[start:start + batch_size]:
            try:
                arrays.append(load_image(dataset.images_dir / dataset.coco.imgs[image_id]["file_name"]))
                ids.append(image_id)
            except ImageReadError as error:
                unreadable += 1
                warnings.warn(f"{error}: scored as all misses", stacklevel=2)
        if arrays:
            evaluator.process(ids, predictor.predict_batch(arrays))
    if unreadable:
        warnings.warn(f"{unreadable} unreadable image(s) scored as all misses", stacklevel=2)
    evaluator.evaluate()
    assert evaluator.last_run is not None
    return evaluator.last_run, evaluator.results()
