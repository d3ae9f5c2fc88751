"""torchvision's ``ssdlite320_mobilenet_v3_large`` trained with its own reference recipe, by Lightning:
the baseline that ``benchmarks/training_budget.py`` holds this project's recipe against.

The recipe is torchvision's ``references/detection`` "ssdlite" as its authors ship it:

- model: ``ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=K+1)``,
  with its own preprocessing (``model.transform``: normalise, resize to 320x320) and post-processing;
- augmentation: ``RandomIoUCrop`` + ``RandomHorizontalFlip`` (``transforms.v2``), then
  ``SanitizeBoundingBoxes``; evaluation converts to float only (the model resizes);
- optimiser: SGD, lr 0.15 per 192 images (:func:`reference_lr` scales it linearly), momentum 0.9,
  weight decay 4e-5 on every parameter, linear warmup from 0.001 over at most 1000 steps of the
  first epoch *times* a cosine to 0 at the last step (:func:`torchvision_schedule`: the reference
  chains ``LinearLR`` and ``CosineAnnealingLR``, so the two multiply; ours runs them one after the other).

Images and boxes are read by :class:`detector.data.coco.CocoDetection`, the project's own loader;
:class:`V2Transform` hands them to torchvision's transforms, so only the augmentation is torchvision's.
Images without objects are kept (the reference drops them on COCO), so both recipes see the same set.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.models.detection.ssd import SSD
from torchvision.transforms import v2

from detector.data.coco import CocoDetection
from detector.evaluation.coco import CocoEvaluator
from detector.labels import LabelMap

__all__ = ["IMAGE_SIZE", "StepClock", "StepClockCallback", "TorchvisionSSDLite", "V2Transform", "input_hw",
           "reference_loader", "reference_lr", "reference_model"]

# torchvision's published SSDLite recipe (references/detection/README.md): 8 GPUs x 24 images, lr 0.15.
REFERENCE_LR = 0.15
REFERENCE_BATCH = 192
MOMENTUM = 0.9
WEIGHT_DECAY = 4e-5
WARMUP_FACTOR = 1e-3
MAX_WARMUP_STEPS = 1000
IMAGE_SIZE = 320  # ssdlite320's model.transform resizes every image to 320x320


def input_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``320`` or ``(H, W)`` -> ``(H, W)``."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(v) for v in image_size)
    return height, width


def reference_model(num_classes: int, image_size: int | Sequence[int] = IMAGE_SIZE, **kwargs: Any) -> SSD:
    """``ssdlite320_mobilenet_v3_large`` with random weights (no download), ``num_classes`` with the
    background, resizing its inputs to ``image_size`` (``320`` square or ``(H, W)``); ``kwargs`` go to
    the builder (``score_thresh``, ``nms_thresh``, ``detections_per_img``, ``topk_candidates``)."""
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    height, width = input_hw(image_size)
    model.transform.min_size = (min(height, width),)
    model.transform.max_size = max(height, width)
    model.transform.fixed_size = (width, height)  # torchvision's fixed_size is (W, H)
    return model


def reference_lr(batch_size: int) -> float:
    """The reference's learning rate scaled linearly to ``batch_size`` images per step."""
    return REFERENCE_LR * batch_size / REFERENCE_BATCH


def train_transform() -> v2.Compose:
    """The reference "ssdlite" pipeline (references/detection/presets.py, v2 transforms)."""
    return v2.Compose([
        v2.RandomIoUCrop(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.ToDtype(torch.float32, scale=True),
        v2.SanitizeBoundingBoxes(),  # drops the boxes RandomIoUCrop left outside the crop
        v2.ToPureTensor(),
    ])


def eval_transform() -> v2.Compose:
    """The reference evaluation pipeline: only uint8 -> float 0..1 (the model resizes)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])


class V2Transform:
    """A ``transforms.v2`` pipeline behind the call :class:`CocoDetection` makes of its transform.

    ``(image=np.ndarray[H, W, 3] uint8 RGB, bboxes=[N, 4] xyxy pixels, labels=[N])`` ->
    ``{"image": FloatTensor[3, H', W'] in 0..1, "bboxes": FloatTensor[M, 4] xyxy pixels of that
    image, "labels": Int64Tensor[M]}``. The pipeline gets a uint8 ``tv_tensors.Image`` and
    ``BoundingBoxes``, as torchvision's reference dataset gives it.
    """

    def __init__(self, transform: Callable[..., Any]) -> None:
        self.transform = transform

    def __call__(self, image: np.ndarray, bboxes: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        tensor = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous())
        boxes = tv_tensors.BoundingBoxes(torch.as_tensor(bboxes, dtype=torch.float32).reshape(-1, 4),
                                         format="XYXY", canvas_size=tuple(image.shape[:2]))
        out, target = self.transform(tensor, {"boxes": boxes, "labels": torch.as_tensor(labels, dtype=torch.int64)})
        return {"image": out, "bboxes": target["boxes"], "labels": target["labels"]}


def _list_collate(batch: Sequence[tuple[Tensor, dict[str, Any]] | None]) -> tuple[list[Tensor], list[dict]]:
    """Images of different sizes stay a list (the model resizes them); unreadable items are dropped."""
    items = [b for b in batch if b is not None]
    return [image for image, _ in items], [target for _, target in items]


def reference_loader(images: str | PathLike[str], annotations: str | PathLike[str], label_map: LabelMap, *,
                     train: bool, batch_size: int, num_workers: int, seed: int = 0) -> DataLoader:
    """Batches ``(list of FloatTensor[3, H, W] in 0..1, list of CocoDetection targets)``.

    Training shuffles with a generator seeded by ``seed`` and drops the last partial batch, as the
    project's own loader does.
    """
    dataset = CocoDetection(images, annotations, V2Transform(train_transform() if train else eval_transform()),
                            label_map=label_map)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train, num_workers=num_workers,
                      collate_fn=_list_collate, generator=torch.Generator().manual_seed(seed) if train else None,
                      persistent_workers=train and num_workers > 0)


def torchvision_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor of step ``s``: the reference's linear warmup (from ``WARMUP_FACTOR`` over ``warmup_steps``)
    times its cosine decay, here per step over the whole budget rather than per epoch.

    This is torchvision's recipe, not a second copy of ours (:mod:`detector.training.schedules`):
    the reference steps both schedulers together, so at the end of warmup the cosine has already
    decayed by ``cos(pi * warmup / total)``.
    """

    def factor(step: int) -> float:
        warm = WARMUP_FACTOR + (1 - WARMUP_FACTOR) * min(1.0, step / max(1, warmup_steps)) if warmup_steps else 1.0
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))

    return factor


class TorchvisionSSDLite(pl.LightningModule):
    """``ssdlite320_mobilenet_v3_large`` from scratch, with the reference optimiser and schedule.

    Args:
        label_map: ``LabelMap.to_dict()`` of the training annotations (sets the number of classes).
        total_steps: the step budget; the cosine reaches 0 there.
        lr: peak learning rate (the recipe's: :func:`reference_lr` of the batch size).
        warmup_steps: linear warmup from ``WARMUP_FACTOR * lr`` (the reference: at most 1000 steps
            of the first epoch).
        image_size: the model's input, ``320`` (its own) or ``(H, W)``.

    Validation scores every image of the val loader's annotations with pycocotools; the metrics
    dict of the last validation is ``self.metrics``.
    """

    def __init__(self, label_map: dict[str, list], total_steps: int, lr: float, warmup_steps: int,
                 image_size: int | Sequence[int] = IMAGE_SIZE) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.label_map = LabelMap.from_dict(label_map)
        self.model = reference_model(self.label_map.num_classes, image_size)
        self.evaluator: CocoEvaluator | None = None
        self.metrics: dict[str, Any] | None = None

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """``images`` FloatTensor[3, H, W] in 0..1 -> per image ``{"boxes" [N, 4] xyxy original
        pixels, "scores" [N], "labels" [N] in 1..K}`` (call in eval mode)."""
        return self.model(images)

    def training_step(self, batch: tuple[list[Tensor], list[dict[str, Any]]], batch_idx: int) -> Tensor:
        images, targets = batch
        losses = self.model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"torchvision: non-finite loss at step {self.global_step}: {losses}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def on_validation_epoch_start(self) -> None:
        if self.evaluator is None:
            dataset = self.trainer.val_dataloaders.dataset
            self.evaluator = CocoEvaluator(dataset.coco, label_map=self.label_map, all_images=True)
        self.evaluator.reset()

    def validation_step(self, batch: tuple[list[Tensor], list[dict[str, Any]]], batch_idx: int) -> None:
        images, targets = batch
        self.evaluator.process([int(t["image_id"]) for t in targets], self(images))

    def on_validation_epoch_end(self) -> None:
        self.metrics = self.evaluator.evaluate()
        self.log("val/mAP", float(self.metrics["AP"]))

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        # The reference applies weight decay to every parameter unless --norm-weight-decay is given.
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, torchvision_schedule(hp.total_steps, hp.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def recipe(self) -> dict[str, Any]:
        """What was trained, for a report (the ``recipes.torchvision`` entry of the benchmark's JSON)."""
        return {
            "name": "torchvision reference (ssdlite)",
            "model": "ssdlite320_mobilenet_v3_large",
            "weights": None,
            "weights_backbone": None,
            "image_size": self.hparams.image_size if isinstance(self.hparams.image_size, int)
            else list(input_hw(self.hparams.image_size)),
            "augment": "RandomIoUCrop + RandomHorizontalFlip(0.5) (transforms.v2, SanitizeBoundingBoxes)",
            "optimizer": "sgd",
            "lr": float(self.hparams.lr),
            "momentum": MOMENTUM,
            "weight_decay": WEIGHT_DECAY,
            "weight_decay_on": "every parameter (the reference's default)",
            "warmup_steps": int(self.hparams.warmup_steps),
            "schedule": "linear warmup from 0.001, times cosine to 0 at the last step",
            "params": sum(p.numel() for p in self.model.parameters()),
        }


class StepClock:
    """Time stamps and image counts of training steps; throughput excludes the first ``skip`` steps.

    ``record(images)`` is called at the end of every optimisation step. ``images_per_s`` is the
    images of steps ``skip+1..N`` over the wall time from the end of step ``skip`` to the end of step
    ``N``, so it counts everything the loop does between steps (data loading included). At least the
    first step is always left out (nothing marks its start) and at least one is always measured.
    """

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.stamps: list[float] = []
        self.images: list[int] = []

    def record(self, images: int) -> None:
        self.stamps.append(time.perf_counter())
        self.images.append(images)

    @property
    def steps(self) -> int:
        return len(self.stamps)

    def summary(self) -> dict[str, float | int]:
        """``{"images_per_s", "skipped_steps", "measured_steps", "measured_images", "measured_s", "steps"}``."""
        if self.steps < 2:
            raise RuntimeError(f"throughput needs at least 2 training steps, got {self.steps}")
        skipped = max(1, min(self.skip, self.steps - 1))
        seconds = self.stamps[-1] - self.stamps[skipped - 1]
        images = sum(self.images[skipped:])
        return {
            "images_per_s": images / seconds,
            "skipped_steps": skipped,
            "measured_steps": self.steps - skipped,
            "measured_images": images,
            "measured_s": seconds,
            "steps": self.steps,
        }


class StepClockCallback(pl.Callback):
    """Feeds a :class:`StepClock` at every ``on_train_batch_end`` (one optimiser step per batch);
    the batch's first element holds its images (a stacked tensor or a list)."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.clock.record(len(batch[0]))
