"""COCO-format detection dataset read with pycocotools, its collate function and worker seeding."""
from __future__ import annotations

import contextlib
import io
import json
import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor

from detector.data.io import ImageReadError, load_image
from detector.labels import LabelMap

__all__ = [
    "CocoDetection",
    "DatasetStats",
    "detection_collate",
    "load_coco_json",
    "seed_transform",
    "worker_init_fn",
]

Target = dict[str, Any]


def load_coco_json(annotation_file: str | PathLike[str]) -> dict[str, Any]:
    """Read a COCO annotation file; a clear ``ValueError`` names the file when it is not valid COCO JSON."""
    path = Path(annotation_file)
    try:
        with path.open("r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"annotation file {str(path)!r} is not valid JSON: {err}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"annotation file {str(path)!r} is not valid JSON (not UTF-8 text): {err}") from err
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise ValueError(f"annotation file {str(path)!r} is not COCO format: it needs 'images' and 'categories'")
    data.setdefault("annotations", [])
    return data


def _preview(items: Sequence[Any], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


@dataclass
class DatasetStats:
    """What building and reading the dataset dropped or fixed (counts; ids are COCO annotation ids)."""

    images: int = 0
    boxes: int = 0
    crowd: int = 0
    clipped: int = 0
    dropped_invalid: list[int] = field(default_factory=list)  # zero/negative size or NaN
    dropped_outside: list[int] = field(default_factory=list)  # nothing left after clipping
    unreadable: list[str] = field(default_factory=list)  # file names that failed to decode

    @property
    def num_unreadable(self) -> int:
        return len(self.unreadable)


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection dataset: an images folder and one annotation file.

    Labels are contiguous, ``1..K`` in the order of sorted category ids (``self.label_map``); ``0`` is
    background. ``iscrowd`` boxes never become training targets; images without boxes are kept as
    negatives. Boxes are clipped to the image; zero-size, negative and NaN boxes are dropped,
    counted in ``self.stats`` and named once in a warning.

    Item ``i`` is ``(image, target)``:
        - ``image``: FloatTensor[3, S, S] from ``transform`` (with ``transform=None``: FloatTensor[3, H, W]
          in 0..1, unnormalised, at the original size).
        - ``target``: ``{"boxes": FloatTensor[N, 4] xyxy in the returned image's pixels,
          "labels": Int64Tensor[N] in 1..K, "image_id": int, "orig_size": (h, w) of the decoded
          image, "file_name": str}``.
    or ``None`` when the image cannot be decoded (a warning names it; ``stats.unreadable`` counts it
    in this process; DataLoader workers keep their own counts).

    Raises (at construction):
        ValueError: invalid JSON (naming the file); an annotation whose ``category_id`` is not in
            ``categories`` (naming the annotation ids).
        FileNotFoundError: image files listed in the JSON but absent from ``images_dir`` (named).
    """

    def __init__(
        self,
        images_dir: str | PathLike[str],
        annotation_file: str | PathLike[str],
        transform: Callable[..., dict[str, Any]] | None = None,
        *,
        label_map: LabelMap | None = None,
        check_files: bool = True,
    ) -> None:
        """
        Args:
            images_dir: folder that ``images[*].file_name`` is relative to.
            annotation_file: COCO JSON.
            transform: an albumentations ``Compose`` from :func:`detector.data.transforms.build_transforms`
                (``image``, pascal_voc ``bboxes``, ``labels``).
            label_map: reuse another split's map (e.g. train's for val); by default built from this
                file's ``categories``.
            check_files: verify every image file exists now (off only for very large remote sets).
        """
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        self.transform = transform
        data = load_coco_json(self.annotation_file)
        self.label_map = label_map if label_map is not None else LabelMap.from_categories(data["categories"])
        known = set(self.label_map.category_ids)
        unknown = [a.get("id") for a in data["annotations"] if int(a.get("category_id", -1)) not in known]
        if unknown:
            raise ValueError(
                f"{self.annotation_file}: annotation id(s) {_preview(unknown)} have a category_id that is not "
                f"in 'categories' {sorted(known)}"
            )
        # pycocotools prints progress on stdout; keep library output quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO()
            self.coco.dataset = data
            self.coco.createIndex()
        self.ids: list[int] = sorted(self.coco.imgs)
        if check_files:
            missing = [self.coco.imgs[i]["file_name"] for i in self.ids
                       if not (self.images_dir / self.coco.imgs[i]["file_name"]).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image file(s) listed in {self.annotation_file} are missing from "
                    f"{self.images_dir}: {_preview(missing)}"
                )
        self.stats = DatasetStats(images=len(self.ids))
        self._targets = {i: self._prepare_target(i) for i in self.ids}
        self.stats.boxes = sum(len(b) for b, _ in self._targets.values())
        if self.stats.dropped_invalid:
            warnings.warn(
                f"{self.annotation_file}: dropped {len(self.stats.dropped_invalid)} box(es) with zero or negative "
                f"size or NaN: annotation id(s) {_preview(self.stats.dropped_invalid)}",
                stacklevel=2,
            )
        if self.stats.dropped_outside:
            warnings.warn(
                f"{self.annotation_file}: dropped {len(self.stats.dropped_outside)} box(es) entirely outside "
                f"their image: annotation id(s) {_preview(self.stats.dropped_outside)}",
                stacklevel=2,
            )

    def _prepare_target(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes [N, 4] xyxy float32 (clipped to the JSON's image size when it gives one) and labels [N]."""
        info = self.coco.imgs[image_id]
        width, height = float(info.get("width") or math.inf), float(info.get("height") or math.inf)
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0):
                # SSD has no "ignore" state: a crowd region as a positive teaches a wrong box.
                self.stats.crowd += 1
                continue
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (KeyError, TypeError, ValueError):
                self.stats.dropped_invalid.append(ann.get("id"))
                continue
            if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
                self.stats.dropped_invalid.append(ann.get("id"))
                continue
            box = np.array([x, y, x + w, y + h], dtype=np.float64)
            clipped = np.clip(box, 0, [width, height, width, height])
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                self.stats.dropped_outside.append(ann.get("id"))
                continue
            self.stats.clipped += int(not np.array_equal(box, clipped))
            boxes.append(clipped)
            labels.append(self.label_map.label_of_category(ann["category_id"]))
        return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Target] | None:
        image_id = self.ids[index]
        file_name = self.coco.imgs[image_id]["file_name"]
        path = self.images_dir / file_name
        try:
            image = load_image(path)
        except ImageReadError as err:
            self.stats.unreadable.append(file_name)
            warnings.warn(f"skipping unreadable image {path}: {err.reason}", stacklevel=2)
            return None
        h, w = image.shape[:2]
        boxes, labels = self._targets[image_id]
        # The decoded size can differ from the JSON's (EXIF rotation, wrong metadata): clip again.
        boxes = np.clip(boxes, 0, np.array([w, h, w, h], dtype=np.float32))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels = boxes[keep], labels[keep]
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=labels)
            tensor = out["image"]
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        else:
            tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        target: Target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "image_id": int(image_id),
            "orig_size": (int(h), int(w)),
            "file_name": str(file_name),
        }
        return tensor, target

    def __repr__(self) -> str:
        return (f"CocoDetection({self.annotation_file}, images={len(self)}, boxes={self.stats.boxes}, "
                f"classes={len(self.label_map.category_ids)})")


def detection_collate(batch: Sequence[tuple[Tensor, Target] | None]) -> tuple[Tensor, list[Target]]:
    """Stack a batch, dropping ``None`` items (unreadable images).

    Returns:
        ``(images FloatTensor[B, 3, S, S], targets list[dict])``; with every item ``None``,
        ``FloatTensor[0, 3, 0, 0]`` and ``[]``.
    """
    items = [b for b in batch if b is not None]
    if not items:
        return torch.empty((0, 3, 0, 0)), []
    return torch.stack([img for img, _ in items]), [t for _, t in items]


def seed_transform(transform: Any, seed: int) -> None:
    """Reseed an albumentations ``Compose`` (which keeps its own generator) if it has one."""
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: give each worker its own random streams.

    Each worker process starts with a copy of the parent's generators, so without this every worker
    would draw the same augmentations. ``torch.initial_seed()`` in a worker is ``base_seed +
    worker_id``, with ``base_seed`` drawn from the loader's generator each epoch: seeds differ per
    worker and per epoch, and a seeded ``DataLoader(generator=...)`` makes them repeatable.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset if info is not None else None
    # Reach through Subset / ConcatDataset-style wrappers to every transform.
    stack = [dataset]
    while stack:
        ds = stack.pop()
        if ds is None:
            continue
        if getattr(ds, "transform", None) is not None:
            seed_transform(ds.transform, seed)
        stack.extend(getattr(ds, "datasets", []))
        if hasattr(ds, "dataset"):
            stack.append(ds.dataset)
