"""The LightningDataModule over COCO-format train / val sets."""
from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Sampler

from detector.data.coco import CocoDetection, detection_collate, worker_init_fn
from detector.data.transforms import build_transforms
from detector.labels import LabelMap
from detector.constants import IMAGENET_MEAN, IMAGENET_STD


def read_label_map(annotation_file: str | Path) -> LabelMap:
    """The label map of a COCO annotation file (categories sorted by id)."""
    path = Path(annotation_file)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if "categories" not in data:
        raise ValueError(f"{path}: no 'categories' list, so this is not a COCO detection file")
    return LabelMap.from_categories(data["categories"])


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a generator seeded by ``(seed, epoch)``, so epoch ``e`` visits images in the same
    order in every run and after a resume (Lightning calls ``set_epoch``). Under DDP Lightning's
    ``DistributedSampler`` does the same across processes, so this one serves single-process runs."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())


class DetectionDataModule(pl.LightningDataModule):
    """Train and validation loaders over COCO-format data.

    Args:
        train_images, train_annotations: the training images folder and COCO JSON; the label map
            (and so the number of classes) comes from this file's ``categories``.
        val_images, val_annotations: the validation split, scored with COCO metrics.
        batch_size: images per process (per GPU under DDP).
        num_workers: loader processes per process.
        image_size: the square network input side, in pixels.
        augment: training pipeline, ``ssd`` | ``ssdlite`` | ``light`` | ``none``.
        seed: base seed of the augmentation pipelines (workers derive their own).
    """

    def __init__(
        self,
        train_images: str | None = None,
        train_annotations: str | None = None,
        val_images: str | None = None,
        val_annotations: str | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        image_size: int = 320,
        augment: str = "ssd",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_images = train_images
        self.train_annotations = train_annotations
        self.val_images = val_images
        self.val_annotations = val_annotations
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        source = train_annotations or val_annotations
        if source is None:
            raise ValueError("give --data.train_annotations (or --data.val_annotations for validate)")
        self.label_map = read_label_map(source)
        self.train_dataset: CocoDetection | None = None
        self.val_dataset: CocoDetection | None = None

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_dataset is None:
            if not (self.train_images and self.train_annotations):
                raise ValueError("fit needs --data.train_images and --data.train_annotations")
            transform = build_transforms(self.augment, self.image_size, train=True, mean=IMAGENET_MEAN,
                                         std=IMAGENET_STD, seed=self.seed)
            self.train_dataset = CocoDetection(self.train_images, self.train_annotations, transform)
            self._check_label_map(self.train_dataset)
        if stage in ("fit", "validate") and self.val_dataset is None and self.val_annotations:
            if not self.val_images:
                raise ValueError("--data.val_annotations needs --data.val_images")
            transform = build_transforms("none", self.image_size, train=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
            self.val_dataset = CocoDetection(self.val_images, self.val_annotations, transform, label_map=self.label_map)
            self._check_label_map(self.val_dataset)

    def _check_label_map(self, dataset: CocoDetection) -> None:
        if dataset.label_map != self.label_map:
            raise ValueError(
                f"categories differ between the training annotations ({list(self.label_map.names)}) "
                f"and {dataset.annotation_file} ({list(dataset.label_map.names)})"
            )

    def _loader(self, dataset: CocoDetection, train: bool) -> DataLoader:
        distributed = self.trainer is not None and self.trainer.world_size > 1
        sampler = EpochShuffleSampler(len(dataset), self.seed) if train and not distributed else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train if sampler is None else None,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            collate_fn=detection_collate,
            worker_init_fn=worker_init_fn,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, train=False)
