"""ImageFolder-layout data for the classifier: one sub-folder per class (ImageNet's layout).

::

    train_dir/
        cat/ 0001.jpg 0002.png ...
        dog/ ...

Class ``i`` is the ``i``-th folder name in sorted order (torchvision's ``ImageFolder`` convention);
the names are saved in every checkpoint. Images are decoded by :func:`detector.data.io.load_image`
(EXIF-rotated, any mode to RGB); an unreadable one is skipped with a warning and counted.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detector.data.io import IMAGE_SUFFIXES, ImageReadError, is_image_file, load_image
from detector.pretrain.transforms import AUGMENTATIONS, build_classifier_transforms
from detector.training.loaders import LoaderDataModule

__all__ = [
    "AUGMENTATIONS",
    "ClassifierDataModule",
    "ImageFolderDataset",
    "build_classifier_transforms",
    "classification_collate",
    "find_classes",
]


def find_classes(directory: str | PathLike[str]) -> list[str]:
    """The sorted names of ``directory``'s sub-folders (hidden ones excluded)."""
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"image folder not found: {path}")
    names = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ValueError(f"{path}: no class sub-folders (the layout is DIR/<class name>/<image>)")
    return names


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images under ``root/<class name>/`` (any depth below it), labelled by ``class_names``.

    Item ``i`` is ``(image, label)``: ``image`` from ``transform`` (FloatTensor[3, S, S]), ``label`` an
    int in ``0..len(class_names)-1``; or ``None`` when the file cannot be decoded (a warning names
    it, ``self.unreadable`` counts it in this process; DataLoader workers keep their own counts).

    Args:
        root: the split's folder.
        class_names: the label order; by default ``root``'s own sub-folders. A folder of ``root`` that
            is not in ``class_names`` is an error; a class without a folder here simply has no images.
        transform: see :func:`build_classifier_transforms`.
    """

    def __init__(
        self,
        root: str | PathLike[str],
        class_names: Sequence[str] | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        self.root = Path(root)
        folders = find_classes(self.root)
        self.class_names = list(class_names) if class_names is not None else folders
        unknown = sorted(set(folders) - set(self.class_names))
        if unknown:
            raise ValueError(f"{self.root}: class folder(s) {unknown} are not among the classes {self.class_names}")
        self.transform = transform
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.class_names):
            folder = self.root / name
            if folder.is_dir():
                files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
                self.samples.extend((p, label) for p in files)
        if not self.samples:
            raise ValueError(f"{self.root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
        self.unreadable: list[str] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        path, label = self.samples[index]
        try:
            image = load_image(path)
        except ImageReadError as err:
            self.unreadable.append(str(path))
            warnings.warn(f"skipping unreadable image {path}: {err.reason} "
                          f"({len(self.unreadable)} skipped so far in this process)", stacklevel=2)
            return None
        if self.transform is not None:
            tensor = self.transform(image=image)["image"]
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        return tensor, label

    def __repr__(self) -> str:
        return f"ImageFolderDataset({self.root}, images={len(self)}, classes={len(self.class_names)})"


def classification_collate(batch: Sequence[tuple[Tensor, int] | None]) -> tuple[Tensor, Tensor]:
    """Stack a batch, dropping ``None`` items (unreadable images).

    Returns:
        ``(images FloatTensor[B, 3, S, S], labels Int64Tensor[B])``; ``B`` may be 0.
    """
    items = [b for b in batch if b is not None]
    if not items:
        return torch.empty((0, 3, 0, 0)), torch.empty((0,), dtype=torch.int64)
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items], dtype=torch.int64)


class ClassifierDataModule(LoaderDataModule):
    """Train and validation loaders over ImageFolder-layout folders.

    Args:
        train_dir: training folder, one sub-folder per class; its folder names are the classes.
        val_dir: validation folder with (a subset of) the same class folders.
        batch_size: images per process (per GPU under DDP).
        num_workers: loader processes per process.
        image_size: the square network input side, in pixels.
        augment: ``standard`` (random-resized crop, colour jitter, flip) or ``none``.
        seed: base seed of the augmentation pipeline and of the shuffling (workers derive their own).
    """

    def __init__(
        self,
        train_dir: str | None = None,
        val_dir: str | None = None,
        batch_size: int = 64,
        num_workers: int = 4,
        image_size: int = 224,
        augment: str = "standard",
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, classification_collate)
        self.save_hyperparameters()
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        self.train_dir = train_dir
        self.val_dir = val_dir
        self.image_size = image_size
        self.augment = augment
        source = train_dir or val_dir
        if source is None:
            raise ValueError("give --data.train_dir (or --data.val_dir for validate)")
        # The classes (and so the model's output size) come from the folder names, never by hand.
        self.class_names: list[str] = find_classes(source)
        self.train_dataset: ImageFolderDataset | None = None
        self.val_dataset: ImageFolderDataset | None = None

    @property
    def has_validation(self) -> bool:
        return bool(self.val_dir)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_dataset is None:
            if not self.train_dir:
                raise ValueError("fit needs --data.train_dir")
            transform = build_classifier_transforms(self.image_size, train=True, augment=self.augment, seed=self.seed)
            self.train_dataset = ImageFolderDataset(self.train_dir, self.class_names, transform)
        if stage in ("fit", "validate") and self.val_dataset is None and self.val_dir:
            transform = build_classifier_transforms(self.image_size, train=False)
            self.val_dataset = ImageFolderDataset(self.val_dir, self.class_names, transform)
