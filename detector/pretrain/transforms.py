"""The classifier's albumentations pipelines (train and eval), on ``HxWx3`` uint8 RGB arrays."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from detector.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["AUGMENTATIONS", "CROP_FRACTION", "build_classifier_transforms"]

AUGMENTATIONS: tuple[str, ...] = ("standard", "none")
# The eval resize: shorter side to image_size / 0.875, then a centre crop (224 <- 256, the ImageNet convention).
CROP_FRACTION = 0.875


def build_classifier_transforms(
    image_size: int,
    train: bool,
    augment: str = "standard",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int | None = None,
) -> A.Compose:
    """``t(image=HxWx3 uint8)["image"]`` -> ``FloatTensor[3, image_size, image_size]`` normalised.

    Train (``augment="standard"``): random-resized crop (8-100 % of the area, 3/4-4/3 aspect),
    colour jitter (brightness, contrast, saturation 0.4; hue untouched, as in the MobileNet
    recipe), horizontal flip. Eval (and ``augment="none"``): shorter side to ``image_size / 0.875``,
    centre crop.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if train and augment == "standard":
        steps: list[Any] = [
            A.RandomResizedCrop(size=(image_size, image_size), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                                interpolation=cv2.INTER_LINEAR),
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0, p=1.0),
            A.HorizontalFlip(p=0.5),
        ]
    else:
        steps = [
            A.SmallestMaxSize(max_size=int(round(image_size / CROP_FRACTION)), interpolation=cv2.INTER_LINEAR),
            A.CenterCrop(height=image_size, width=image_size),
        ]
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(steps, seed=seed)
