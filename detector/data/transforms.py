"""Albumentations pipelines: ``ssd``, ``ssdlite``, ``light``, ``mosaic``, ``none`` and the eval pipeline.

Every pipeline is an ``A.Compose`` called as ``t(image=HxWx3 uint8, bboxes=[[x1, y1, x2, y2], ...],
labels=[...])`` with boxes in ``pascal_voc`` format (``xyxy`` pixels) and returns
``image`` FloatTensor[3, S, S] (normalised), ``bboxes`` (``xyxy`` in the returned image's pixels) and
``labels``. Albumentations has no SSD min-IoU crop and no zoom-out onto a mean-filled canvas, so
both are written here as ``DualTransform`` subclasses that compose like the built-in ones.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops import functional as fcrops
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.core.transforms_interface import BaseTransformInitSchema
from albumentations.pytorch import ToTensorV2

from detector.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIPELINES",
    "MinIoURandomCrop",
    "ZoomOut",
    "build_transforms",
]

PIPELINES: tuple[str, ...] = ("ssd", "ssdlite", "sim2real", "light", "mosaic", "none")


def _box_iou_np(boxes: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """IoU of ``boxes`` [N, 4] xyxy with ``crops`` [T, 4] xyxy -> [T, N]."""
    ix1 = np.maximum(crops[:, None, 0], boxes[None, :, 0])
    iy1 = np.maximum(crops[:, None, 1], boxes[None, :, 1])
    ix2 = np.minimum(crops[:, None, 2], boxes[None, :, 2])
    iy2 = np.minimum(crops[:, None, 3], boxes[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    crop_area = (crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1])
    return inter / np.maximum(area[None, :] + crop_area[:, None] - inter, 1e-12)


class MinIoURandomCrop(BaseCrop):
    """SSD's random crop (Liu et al. 2016; torchvision's ``RandomIoUCrop``) as a ``DualTransform``.

    Each call draws one option from ``min_ious`` (or, with ``whole_image=True``, "keep the whole
    image"), then tries up to ``trials`` crops whose sides are ``[min_scale, max_scale]`` of the
    image's and whose aspect ratio is in ``[min_aspect_ratio, max_aspect_ratio]``. A crop is
    accepted when at least one box centre lies inside it and the best IoU of those boxes with the
    crop reaches the option. Boxes whose centre falls outside the accepted crop are dropped; the
    others are clipped to it (albumentations does the clipping). Images without boxes get a plain
    random crop of the same size range. If no option succeeds after ``max_attempts`` draws the
    image is kept whole.
    """

    class InitSchema(BaseTransformInitSchema):
        min_ious: Sequence[float]
        whole_image: bool
        min_scale: float
        max_scale: float
        min_aspect_ratio: float
        max_aspect_ratio: float
        trials: int
        max_attempts: int

    def __init__(
        self,
        min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
        whole_image: bool = True,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        min_aspect_ratio: float = 0.5,
        max_aspect_ratio: float = 2.0,
        trials: int = 40,
        max_attempts: int = 50,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.min_ious = tuple(float(v) for v in min_ious)
        self.whole_image = whole_image
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.min_aspect_ratio = min_aspect_ratio
        self.max_aspect_ratio = max_aspect_ratio
        self.trials = trials
        self.max_attempts = max_attempts

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_ious", "whole_image", "min_scale", "max_scale", "min_aspect_ratio",
                "max_aspect_ratio", "trials", "max_attempts")

    def _candidate_crops(self, height: int, width: int) -> np.ndarray:
        """``trials`` random crops [T, 4] xyxy (integers) within the size and aspect limits."""
        r = self.min_scale + (self.max_scale - self.min_scale) * self.random_generator.random((self.trials, 2))
        new_w = (width * r[:, 0]).astype(np.int64)
        new_h = (height * r[:, 1]).astype(np.int64)
        ok = (new_w >= 1) & (new_h >= 1)
        aspect = new_w / np.maximum(new_h, 1)
        ok &= (self.min_aspect_ratio <= aspect) & (aspect <= self.max_aspect_ratio)
        r = self.random_generator.random((self.trials, 2))
        left = ((width - new_w) * r[:, 0]).astype(np.int64)
        top = ((height - new_h) * r[:, 1]).astype(np.int64)
        return np.stack([left, top, left + new_w, top + new_h], axis=1)[ok]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        whole = (0, 0, width, height)
        # Inside Compose boxes arrive normalised [N, 4 + label columns]; work in pixels here.
        raw = np.asarray(data.get("bboxes", []), dtype=np.float64)
        scale = np.array([width, height, width, height], dtype=np.float64)
        boxes = raw[:, :4] * scale if raw.size else np.zeros((0, 4))
        cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
        cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
        options: list[float | None] = [*self.min_ious, *([None] if self.whole_image else [])]
        for _ in range(self.max_attempts):
            option = options[int(self.random_generator.integers(len(options)))]
            if option is None:
                return {"crop_coords": whole}
            # All of an option's trials at once (torchvision loops over them one by one).
            crops = self._candidate_crops(height, width)
            if len(crops) == 0:
                continue
            if len(boxes) == 0:
                return {"crop_coords": tuple(int(v) for v in crops[0])}
            inside = ((crops[:, None, 0] < cx) & (cx < crops[:, None, 2])
                      & (crops[:, None, 1] < cy) & (cy < crops[:, None, 3]))  # [T, N]
            iou = np.where(inside, _box_iou_np(boxes, crops.astype(np.float64)), -1.0)
            good = np.flatnonzero(inside.any(axis=1) & (iou.max(axis=1) >= option))
            if len(good):
                return {"crop_coords": tuple(int(v) for v in crops[good[0]])}
        return {"crop_coords": whole}

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        if len(bboxes):
            height, width = params["shape"][:2]
            # SSD keeps a box only when its centre is inside the crop; albumentations alone would
            # keep any box that overlaps it.
            cx = 0.5 * (bboxes[:, 0] + bboxes[:, 2]) * width
            cy = 0.5 * (bboxes[:, 1] + bboxes[:, 3]) * height
            x1, y1, x2, y2 = crop_coords
            bboxes = bboxes[(x1 < cx) & (cx < x2) & (y1 < cy) & (cy < y2)]
        return fcrops.crop_bboxes_by_coords(bboxes, crop_coords, params["shape"][:2])


class ZoomOut(A.DualTransform):
    """SSD's "expand": place the image at a random spot on a canvas ``r`` times larger, ``r`` drawn
    uniformly from ``[1, max_scale]``, filled with ``fill`` (the dataset mean, as uint8 RGB).

    Teaches small objects. Boxes move with the image; none is lost.
    """

    class InitSchema(BaseTransformInitSchema):
        max_scale: float
        fill: tuple[float, ...] | float

    def __init__(
        self,
        max_scale: float = 4.0,
        fill: Sequence[float] | float = tuple(255.0 * m for m in IMAGENET_MEAN),
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        if max_scale < 1.0:
            raise ValueError(f"max_scale must be >= 1, got {max_scale}")
        self.max_scale = float(max_scale)
        self.fill = tuple(float(v) for v in fill) if isinstance(fill, Sequence) else float(fill)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_scale", "fill")

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        ratio = 1.0 + (self.max_scale - 1.0) * float(self.random_generator.random())
        canvas_w, canvas_h = int(width * ratio), int(height * ratio)
        left = int((canvas_w - width) * float(self.random_generator.random()))
        top = int((canvas_h - height) * float(self.random_generator.random()))
        return {"canvas": (canvas_h, canvas_w), "offset": (left, top)}

    def apply(self, img: np.ndarray, canvas: tuple[int, int], offset: tuple[int, int], **params: Any) -> np.ndarray:
        h, w = img.shape[:2]
        left, top = offset
        channels = img.shape[2] if img.ndim == 3 else 1
        fill = np.broadcast_to(np.asarray(self.fill, dtype=np.float64), (channels,)).tolist()
        # One C call builds the padded canvas; filling a numpy canvas was the pipeline's slowest step.
        out = cv2.copyMakeBorder(img, top, canvas[0] - h - top, left, canvas[1] - w - left,
                                 cv2.BORDER_CONSTANT, value=fill + [0.0] * (4 - channels))
        return out.reshape(*canvas, *img.shape[2:])

    def apply_to_mask(self, mask: np.ndarray, canvas: tuple[int, int], offset: tuple[int, int], **params: Any) -> np.ndarray:
        out = np.zeros((*canvas, *mask.shape[2:]), dtype=mask.dtype)
        left, top = offset
        out[top : top + mask.shape[0], left : left + mask.shape[1]] = mask
        return out

    def apply_to_bboxes(self, bboxes: np.ndarray, canvas: tuple[int, int], offset: tuple[int, int], **params: Any) -> np.ndarray:
        if not len(bboxes):
            return bboxes
        height, width = params["shape"][:2]
        canvas_h, canvas_w = canvas
        left, top = offset
        out = bboxes.copy()
        # Normalised coordinates: to pixels, shift, back to the canvas' normalised frame.
        out[:, [0, 2]] = (bboxes[:, [0, 2]] * width + left) / canvas_w
        out[:, [1, 3]] = (bboxes[:, [1, 3]] * height + top) / canvas_h
        return out


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


def build_transforms(
    pipeline: str = "ssd",
    image_size: int | Sequence[int] = 320,
    train: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int | None = None,
) -> A.Compose:
    """Build a detection pipeline.

    Args:
        pipeline: ``ssd`` (photometric distortion, zoom-out up to 4x on a mean-filled canvas,
            min-IoU crop, flip), ``ssdlite`` (min-IoU crop and flip, torchvision's SSDLite recipe),
            ``sim2real`` (``ssdlite``'s, then what a real camera does to a rendered frame: colour
            jitter, motion or Gaussian blur, sensor noise and JPEG compression; for simulator data),
            ``light`` (flip and a small colour jitter, for short fine-tunes), ``mosaic`` (YOLOv4's
            mosaic of four images, then Ultralytics' default scale 0.5-1.5 and translation of 10%,
            flip and a strong colour jitter; the dataset supplies the other three images, see
            :meth:`detector.data.coco.CocoDetection.set_mosaic`) or ``none``.
            Ignored when ``train`` is False.
        image_size: output side ``S`` or ``(H, W)``; every pipeline ends with a resize to it.
        train: False gives the eval pipeline: resize and normalise only.
        mean, std: per-channel RGB statistics in 0..1 for ``Normalize``.
        seed: seeds the Compose's own generator (``np.random.seed`` does not reach it). DataLoader
            workers reseed it per worker with :func:`detector.data.coco.worker_init_fn`.

    Returns:
        ``A.Compose`` over ``image`` (HxWx3 uint8), ``bboxes`` (pascal_voc xyxy pixels) and
        ``labels``, giving ``image`` FloatTensor[3, H, W] and boxes in the resized image's pixels.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; choose one of {', '.join(PIPELINES)}")
    height, width = _size(image_size)
    fill = tuple(255.0 * m for m in mean)
    # Geometry that needs the full-resolution image runs before the resize; the rest runs after it,
    # on fewer pixels (a zoomed-out crop can be 4x the size of the input).
    before: list[A.BasicTransform] = []
    after: list[A.BasicTransform] = []
    if train and pipeline == "ssd":
        before = [
            # torchvision's RandomPhotometricDistort ranges (SSD's brightness/contrast/saturation/hue).
            A.ColorJitter(brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                          hue=(-0.05, 0.05), p=0.5),
            ZoomOut(max_scale=4.0, fill=fill, p=0.5),
            MinIoURandomCrop(),
        ]
        after = [A.HorizontalFlip(p=0.5)]
    elif train and pipeline == "ssdlite":
        before = [MinIoURandomCrop()]
        after = [A.HorizontalFlip(p=0.5)]
    elif train and pipeline == "sim2real":
        before = [MinIoURandomCrop()]
        after = [
            A.HorizontalFlip(p=0.5),
            # Camera effects a simulator does not render (domain randomisation, Tobin et al. 2017):
            # exposure and white balance, lens and motion blur, sensor noise, compression.
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.4, hue=0.03, p=0.8),
            A.OneOf([A.MotionBlur(blur_limit=(3, 7)), A.GaussianBlur(blur_limit=(3, 5))], p=0.3),
            A.GaussNoise(std_range=(0.01, 0.05), p=0.3),
            A.ImageCompression(quality_range=(40, 95), p=0.5),
        ]
    elif train and pipeline == "mosaic":
        before = [
            # A 2x2 grid of cells of the output size, each image letterboxed into its cell; the view is
            # one output-sized window around a random grid point, so objects keep the scale a plain
            # resize gives them and the split point moves (Ultralytics' mosaic before its affine).
            A.Mosaic(grid_yx=(2, 2), target_size=(height, width), cell_shape=(height, width),
                     center_range=(0.25, 0.75), fit_mode="contain", fill=fill, p=1.0),
            # Ultralytics' default random_perspective: scale 0.5-1.5, translation up to 10%.
            A.Affine(scale=(0.5, 1.5), translate_percent=(-0.1, 0.1), fill=fill, p=1.0),
        ]
        after = [
            A.HorizontalFlip(p=0.5),
            # Ultralytics' HSV gains (value 0.4, saturation 0.7, hue 0.015), as colour-jitter factors.
            A.ColorJitter(brightness=0.4, contrast=0.0, saturation=0.7, hue=0.015, p=1.0),
        ]
    elif train and pipeline == "light":
        after = [
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02, p=0.5),
        ]
    transforms = [
        *before,
        A.Resize(height, width, interpolation=cv2.INTER_LINEAR),
        *after,
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
        ToTensorV2(),
    ]
    return A.Compose(
        transforms,
        # Boxes narrower or shorter than one output pixel after cropping carry no signal.
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_width=1.0, min_height=1.0,
                                 clip=True),
        seed=seed,
    )
