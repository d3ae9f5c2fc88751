"""COCO-format detection dataset read with pycocotools, its collate function and worker seeding."""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import random
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor

from detector.data.io import ImageReadError, is_image_file, load_image
from detector.labels import CategoryMatch, LabelMap, match_categories

__all__ = [
    "MAX_MISSING_FRACTION",
    "CocoDetection",
    "DatasetStats",
    "check_coco",
    "detection_collate",
    "load_coco_json",
    "seed_transform",
    "worker_init_fn",
]

Target = dict[str, Any]

#: With ``missing="skip"``, more than this share of the listed images absent means the images folder
#: (or the JSON) is wrong, not that a few files were lost: the dataset refuses to build.
MAX_MISSING_FRACTION = 0.5


def load_coco_json(annotation_file: str | PathLike[str]) -> dict[str, Any]:
    """Read a COCO annotation file and refuse one that cannot be trained on safely.

    Raises:
        ValueError (naming the file): not JSON, not UTF-8 text (a UTF-8 byte-order mark is accepted),
            not COCO (no ``images`` / ``categories``), or defective: an image without ``id`` or
            ``file_name``, a non-integer image id, an image id or file name listed twice, an
            annotation without ``id`` or an annotation id listed twice (pycocotools keeps one of
            each duplicate, so the other's boxes would silently vanish or be scored twice).
    """
    path = Path(annotation_file)
    try:
        with path.open("r", encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"annotation file {str(path)!r} is not valid JSON: {err}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"annotation file {str(path)!r} is not valid JSON (not UTF-8 text): {err}") from err
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise ValueError(f"annotation file {str(path)!r} is not COCO format: it needs 'images' and 'categories'")
    data.setdefault("annotations", [])
    check_coco(data, path)
    return data


def _repeated(values: Sequence[Any]) -> tuple[int, list[str]]:
    """(entries beyond the first of each value, ``"value (xN)"`` for each repeated value, most first)."""
    counts = Counter(v if isinstance(v, Hashable) else repr(v) for v in values)
    repeated = sorted(((n, v) for v, n in counts.items() if n > 1), key=lambda t: -t[0])
    return sum(n - 1 for n, _ in repeated), [f"{v!r} (x{n})" for n, v in repeated]


def check_coco(data: dict[str, Any], source: str | PathLike[str]) -> None:
    """Raise ``ValueError`` naming ``source`` and examples when ``data`` has the defects listed in
    :func:`load_coco_json`."""
    images, anns = data["images"], data["annotations"]
    if not isinstance(images, list) or not isinstance(anns, list):
        raise ValueError(f"{source}: 'images' and 'annotations' must be lists")
    incomplete = [i for i, im in enumerate(images) if not isinstance(im, dict) or "id" not in im or "file_name" not in im]
    if incomplete:
        raise ValueError(f"{source}: image entries at position(s) {_preview(incomplete)} lack 'id' or 'file_name'")
    extra, repeated = _repeated([im["id"] for im in images])
    if extra:
        raise ValueError(
            f"{source}: duplicate image ids: {extra} image entries reuse an id already listed "
            f"({len(repeated)} id(s) listed more than once): {_preview(repeated, 10)}; every image needs its own id"
        )
    not_int = [im["id"] for im in images if not isinstance(im["id"], int) or isinstance(im["id"], bool)]
    if not_int:
        raise ValueError(f"{source}: image ids must be integers (COCO format); {len(not_int)} are not: "
                         f"{_preview([repr(i) for i in not_int], 10)}")
    extra, repeated = _repeated([im["file_name"] for im in images])
    if extra:
        raise ValueError(
            f"{source}: duplicate file names: {extra} image entries name a file already listed "
            f"({len(repeated)} file(s) listed more than once): {_preview(repeated, 10)}"
        )
    no_id = [i for i, a in enumerate(anns) if not isinstance(a, dict) or "id" not in a]
    if no_id:
        raise ValueError(f"{source}: annotations at position(s) {_preview(no_id)} have no 'id'")
    extra, repeated = _repeated([a["id"] for a in anns])
    if extra:
        raise ValueError(f"{source}: duplicate annotation ids: {extra} annotations reuse an id already listed: "
                         f"{_preview(repeated, 10)}")


def _preview(items: Sequence[Any], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


@dataclass
class DatasetStats:
    """What building and reading the dataset dropped or fixed (counts; ids are COCO annotation ids).

    ``clipped`` and ``dropped_outside`` are measured against the JSON's ``width`` / ``height``;
    ``unreadable``, ``size_mismatch`` (and ``missing`` without ``check_files``) fill as images are read,
    in this process (DataLoader workers keep their own counts).
    """

    images: int = 0  # images the dataset serves (listed minus missing)
    boxes: int = 0
    crowd: int = 0
    clipped: int = 0
    dropped_invalid: list[int] = field(default_factory=list)  # zero/negative size or NaN
    dropped_outside: list[int] = field(default_factory=list)  # nothing left after clipping
    unreadable: list[str] = field(default_factory=list)  # file names that failed to decode
    missing: list[str] = field(default_factory=list)  # file names listed but absent (skipped)
    size_mismatch: list[str] = field(default_factory=list)  # file names whose real size differs from the JSON's
    orphan_annotations: list[int] = field(default_factory=list)  # annotation ids whose image_id is not listed

    @property
    def num_unreadable(self) -> int:
        return len(self.unreadable)

    @property
    def num_missing(self) -> int:
        return len(self.missing)


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection dataset: an images folder and one annotation file.

    Labels are contiguous, ``1..K`` in the order of sorted category ids (``self.label_map``); ``0`` is
    background. ``iscrowd`` boxes never become training targets; images without boxes are kept as
    negatives. Boxes are clipped to the image; zero-size, negative and NaN boxes are dropped,
    counted in ``self.stats`` and named once in a warning.

    Missing image files: with ``missing="skip"`` (the default) files listed in the JSON but absent
    from ``images_dir`` are left out of the dataset, named in one warning and counted in
    ``stats.missing``, unless more than :data:`MAX_MISSING_FRACTION` (half) of the listed images are
    absent (all of them, for a one-image file): then the folder is evidently the wrong one and
    construction stops. ``missing="error"`` stops on any missing file. ``self.coco`` still holds every
    listed image (so an evaluation over it scores a missing image as all misses); ``self.ids`` holds
    the images served.

    Image size: boxes are in the pixels of the decoded image (EXIF orientation applied). When that
    size differs from the JSON's ``width`` / ``height``, the real size wins: boxes are clipped to it,
    not to the JSON's, a warning names the file and both sizes, and ``stats.size_mismatch`` counts it.

    Item ``i`` is ``(image, target)``:
        - ``image``: FloatTensor[3, S, S] from ``transform`` (with ``transform=None``: FloatTensor[3, H, W]
          in 0..1, unnormalised, at the original size).
        - ``target``: ``{"boxes": FloatTensor[N, 4] xyxy in the returned image's pixels,
          "labels": Int64Tensor[N] in 1..K, "image_id": int, "orig_size": (h, w) of the decoded
          image, "file_name": str}``.
    or ``None`` when the image cannot be decoded (a warning names it; ``stats.unreadable`` counts it
    in this process; DataLoader workers keep their own counts).

    Raises (at construction):
        ValueError: invalid or defective JSON (see :func:`load_coco_json`: duplicate image ids or file
            names, non-integer ids...), naming the file; an annotation whose ``category_id`` is not in
            ``categories`` (naming the annotation ids).
        FileNotFoundError: image files listed in the JSON absent from ``images_dir``: any with
            ``missing="error"``, more than half of them with ``missing="skip"`` (counts and names given).
    """

    def __init__(
        self,
        images_dir: str | PathLike[str],
        annotation_file: str | PathLike[str],
        transform: Callable[..., dict[str, Any]] | None = None,
        *,
        label_map: LabelMap | None = None,
        labels_by_name: LabelMap | None = None,
        check_files: bool = True,
        missing: Literal["skip", "error"] = "skip",
        unknown_categories: Literal["error", "ignore"] = "error",
    ) -> None:
        """
        Args:
            images_dir: folder that ``images[*].file_name`` is relative to.
            annotation_file: COCO JSON.
            transform: an albumentations ``Compose`` from :func:`detector.data.transforms.build_transforms`
                (``image``, pascal_voc ``bboxes``, ``labels``). Its ``A.Mosaic`` steps, if any, get their
                other cells' images from this dataset (see :meth:`set_mosaic`).
            label_map: reuse another split's map, ids and all; by default built from this file's
                ``categories``.
            labels_by_name: the classes to read this file's boxes as, matched **by name** (the file's ids
                may differ, e.g. a renumbered val file); ``self.category_match`` records the match
                (:func:`detector.labels.match_categories`). Replaces ``label_map``.
            check_files: verify every image file exists now (off only for very large remote sets:
                a missing file is then found when read, skipped like an unreadable one or, with
                ``missing="error"``, raised).
            missing: ``"skip"`` image files that are absent (named, counted; refused when more than
                half are) or ``"error"``: stop on any.
            unknown_categories: an annotation whose category is not in ``label_map``: ``"error"``, or
                ``"ignore"`` it like a crowd region (a validation file with classes the model lacks:
                the evaluation leaves those categories out, :class:`detector.labels.CategoryMatch`).
        """
        if missing not in ("skip", "error"):
            raise ValueError(f"missing must be 'skip' or 'error', got {missing!r}")
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        self.transform = transform
        self.missing = missing
        data = load_coco_json(self.annotation_file)
        self.category_match: CategoryMatch | None = None
        if labels_by_name is not None:
            self.category_match = match_categories(labels_by_name, data["categories"], str(self.annotation_file))
            label_map = self.category_match.dataset_label_map()
        self.label_map = label_map if label_map is not None else LabelMap.from_categories(data["categories"])
        if unknown_categories not in ("error", "ignore"):
            raise ValueError(f"unknown_categories must be 'error' or 'ignore', got {unknown_categories!r}")
        listed = {int(c["id"]) for c in data["categories"]}
        undeclared = [a.get("id") for a in data["annotations"] if int(a.get("category_id", -1)) not in listed]
        if undeclared:
            raise ValueError(f"{self.annotation_file}: annotation id(s) {_preview(undeclared)} have a category_id "
                             f"that is not in 'categories' {sorted(listed)}")
        known = set(self.label_map.category_ids)
        self._known_categories = known
        unknown = [a.get("id") for a in data["annotations"] if int(a.get("category_id", -1)) not in known]
        if unknown and unknown_categories == "error":
            raise ValueError(
                f"{self.annotation_file}: annotation id(s) {_preview(unknown)} have a category_id that is not "
                f"in 'categories' {sorted(known)}"
            )
        # pycocotools prints progress on stdout; keep library output quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO()
            self.coco.dataset = data
            self.coco.createIndex()
        self.stats = DatasetStats()
        self.ids: list[int] = sorted(self.coco.imgs)
        if check_files:
            self.ids = self._skip_missing(self.ids)
        self.stats.images = len(self.ids)
        self._seen_mismatch: set[str] = set()
        self._targets = {i: self._prepare_target(i) for i in self.ids}
        self.stats.orphan_annotations = [a["id"] for a in data["annotations"] if a.get("image_id") not in self.coco.imgs]
        self._warn_dropped()
        self._mosaics = _mosaic_steps(transform)
        self._mosaic_p = [float(m.p) for m in self._mosaics]
        # A flag in shared memory, so a switch in the main process reaches persistent loader workers.
        self._mosaic_flag = torch.ones((), dtype=torch.bool).share_memory_() if self._mosaics else None

    def _skip_missing(self, ids: list[int]) -> list[int]:
        """``ids`` whose file exists; the rest named in a warning, or an error (see the class docstring)."""
        absent = {i for i in ids if not (self.images_dir / self.coco.imgs[i]["file_name"]).is_file()}
        if not absent:
            return ids
        names = [self.coco.imgs[i]["file_name"] for i in sorted(absent)]
        counted = f"{len(absent)} image file(s) of the {len(ids)} listed in {self.annotation_file} are missing from "
        if self.missing == "error" or len(absent) > MAX_MISSING_FRACTION * len(ids):
            why = ("missing='error' allows none" if self.missing == "error" else
                   f"more than {MAX_MISSING_FRACTION:.0%} missing: is this the right images folder for this file?")
            raise FileNotFoundError(f"{counted}{self.images_dir} ({why}): {_preview(names, 10)}; {self._folder_hint()}")
        boxes = sum(len(self.coco.imgToAnns.get(i, [])) for i in absent)
        self.stats.missing = names
        warnings.warn(f"{counted}{self.images_dir}; skipping them (and their {boxes} annotation(s)): "
                      f"{_preview(names)}", stacklevel=3)
        return [i for i in ids if i not in absent]

    def _folder_hint(self) -> str:
        """What the images folder holds, so a wrong folder or renamed files show at a glance."""
        if not self.images_dir.is_dir():
            return "the folder does not exist"
        present = list(itertools.islice((p.name for p in sorted(self.images_dir.iterdir()) if is_image_file(p)), 3))
        return f"the folder holds e.g. {', '.join(present)}" if present else "the folder holds no image files"

    def _warn_dropped(self) -> None:
        if self.stats.dropped_invalid:
            warnings.warn(
                f"{self.annotation_file}: dropped {len(self.stats.dropped_invalid)} box(es) with zero or negative "
                f"size or NaN: annotation id(s) {_preview(self.stats.dropped_invalid)}",
                stacklevel=3,
            )
        if self.stats.dropped_outside:
            warnings.warn(
                f"{self.annotation_file}: dropped {len(self.stats.dropped_outside)} box(es) entirely outside "
                f"their image: annotation id(s) {_preview(self.stats.dropped_outside)}",
                stacklevel=3,
            )
        if self.stats.orphan_annotations:
            warnings.warn(
                f"{self.annotation_file}: {len(self.stats.orphan_annotations)} annotation(s) refer to an image_id "
                f"that 'images' does not list and are unused: annotation id(s) {_preview(self.stats.orphan_annotations)}",
                stacklevel=3,
            )

    def _prepare_target(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Valid boxes [N, 4] xyxy float32, not yet clipped, and labels [N].

        Clipping waits for the decoded image (its real size wins over the JSON's); the stats count
        clipped and outside boxes against the JSON's size, which agree when the JSON is right.
        """
        info = self.coco.imgs[image_id]
        width, height = float(info.get("width") or math.inf), float(info.get("height") or math.inf)
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if int(ann.get("category_id", -1)) not in self._known_categories:
                continue  # unknown_categories="ignore"
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
            else:
                self.stats.clipped += int(not np.array_equal(box, clipped))
                self.stats.boxes += 1
            boxes.append(box)
            labels.append(self.label_map.label_of_category(ann["category_id"]))
        return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Image ``index`` as ``(HxWx3 uint8, boxes [N, 4] xyxy pixels clipped to it, labels [N])``, or
        ``None`` when it cannot be decoded (named in a warning, counted in ``self.stats``)."""
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        file_name = info["file_name"]
        path = self.images_dir / file_name
        try:
            image = load_image(path)
        except ImageReadError as err:
            if err.reason == "file not found":  # only without check_files
                if self.missing == "error":
                    raise FileNotFoundError(f"image {str(path)!r} listed in {self.annotation_file} is missing "
                                            f"(missing='error')") from err
                _note(self.stats.missing, file_name)
                warnings.warn(f"skipping missing image {path}", stacklevel=3)
            else:
                _note(self.stats.unreadable, file_name)
                warnings.warn(f"skipping unreadable image {path}: {err.reason}", stacklevel=3)
            return None
        h, w = image.shape[:2]
        self._check_size(info, path, h, w)
        boxes, labels = self._targets[image_id]
        # Boxes are in the decoded image's pixels (EXIF rotation applied): clip to its real size.
        boxes = np.clip(boxes, 0, np.array([w, h, w, h], dtype=np.float32))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return image, boxes[keep], labels[keep]

    @property
    def mosaic_enabled(self) -> bool:
        """Whether the transform's ``A.Mosaic`` steps run (always False without one)."""
        return bool(self._mosaic_flag is not None and self._mosaic_flag.item())

    def set_mosaic(self, enabled: bool) -> None:
        """Switch the transform's ``A.Mosaic`` steps on or off, here and in running DataLoader workers.

        Off, they are skipped as if their ``p`` were 0 and no extra images are read. The flag lives in
        shared memory, so persistent workers see it from the next item they build (Lightning starts an
        epoch's loader iterator after ``on_train_epoch_start``, so a switch there holds for the whole
        epoch). Raises ``ValueError`` when the transform has no ``A.Mosaic``.
        """
        if self._mosaic_flag is None:
            raise ValueError(f"the transform of {self.annotation_file} has no A.Mosaic step to switch")
        self._mosaic_flag.fill_(bool(enabled))

    def _mosaic_metadata(self) -> dict[str, list[dict[str, Any]]]:
        """For every ``A.Mosaic`` step, its metadata key -> the other cells' items: ``rows x cols - 1``
        images drawn at random from the dataset (as Ultralytics' mosaic draws them),
        each ``{"image", "bboxes", "labels"}``. An unreadable draw is left out (warned and counted);
        Mosaic then repeats the primary image in its cell. The images are read before the step draws
        whether it applies, so a ``p`` below 1 still reads them for every item."""
        enabled = self.mosaic_enabled
        metadata: dict[str, list[dict[str, Any]]] = {}
        for mosaic, p in zip(self._mosaics, self._mosaic_p):
            mosaic.p = p if enabled else 0.0
            if not enabled or p == 0.0:
                continue
            rows, cols = mosaic.grid_yx
            items = []
            # np.random is seeded per worker by worker_init_fn (and by seed_everything in-process).
            for other in np.random.randint(0, len(self), size=rows * cols - 1):
                read = self._read(int(other))
                if read is not None:
                    items.append({"image": read[0], "bboxes": read[1], "labels": read[2]})
            metadata[mosaic.metadata_key] = items
        return metadata

    def __getitem__(self, index: int) -> tuple[Tensor, Target] | None:
        read = self._read(index)
        if read is None:
            return None
        image, boxes, labels = read
        image_id = self.ids[index]
        h, w = image.shape[:2]
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=labels, **self._mosaic_metadata())
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
            "file_name": str(self.coco.imgs[image_id]["file_name"]),
        }
        return tensor, target

    def _check_size(self, info: dict[str, Any], path: Path, h: int, w: int) -> None:
        """Warn once per file (per process) when the JSON's width / height disagree with the image."""
        json_w, json_h = info.get("width"), info.get("height")
        if not json_w or not json_h or (int(json_h), int(json_w)) == (h, w) or info["file_name"] in self._seen_mismatch:
            return
        self._seen_mismatch.add(info["file_name"])
        self.stats.size_mismatch.append(info["file_name"])
        hint = " (width and height swapped: a JSON written from the stored, not EXIF-rotated, size?)" \
            if (int(json_h), int(json_w)) == (w, h) else ""
        warnings.warn(
            f"{path}: the image is {w}x{h} (w x h) but {self.annotation_file} says {json_w}x{json_h}{hint}; "
            f"using the real size: boxes are read in the image's pixels and clipped to {w}x{h}",
            stacklevel=3,
        )

    def __repr__(self) -> str:
        return (f"CocoDetection({self.annotation_file}, images={len(self)}, boxes={self.stats.boxes}, "
                f"classes={len(self.label_map.category_ids)})")


def _mosaic_steps(transform: Any) -> list[Any]:
    """Every ``A.Mosaic`` inside an albumentations pipeline (nested ``Compose`` / ``OneOf`` included)."""
    if transform is None:
        return []
    import albumentations as A  # only here: a transform given means albumentations is loaded already

    found: list[A.Mosaic] = []
    stack = [transform]
    while stack:
        t = stack.pop()
        if isinstance(t, A.Mosaic):
            found.append(t)
        stack.extend(getattr(t, "transforms", None) or [])
    return found


def _note(names: list[str], name: str) -> None:
    """Record ``name`` once: an image read every epoch is one file, not one per epoch."""
    if name not in names:
        names.append(name)


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
