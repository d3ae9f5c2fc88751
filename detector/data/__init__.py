"""Data: COCO-format datasets, albumentations pipelines, converters and the synthetic set."""
from detector.data.coco import CocoDetection, DatasetStats, detection_collate, worker_init_fn
from detector.data.io import ImageReadError, load_image
from detector.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PIPELINES, build_transforms

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIPELINES",
    "CocoDetection",
    "DatasetStats",
    "ImageReadError",
    "build_transforms",
    "detection_collate",
    "load_image",
    "worker_init_fn",
]
