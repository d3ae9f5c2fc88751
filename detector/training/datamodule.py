"""The LightningDataModule over COCO-format train / val sets."""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from detector.constants import IMAGENET_MEAN, IMAGENET_STD
from detector.data.coco import CocoDetection, detection_collate, load_coco_json
from detector.data.transforms import build_transforms
from detector.evaluation.evaluate import NetworkInput
from detector.labels import LabelMap
from detector.training.loaders import LoaderDataModule


def read_label_map(annotation_file: str | Path) -> LabelMap:
    """The label map of a COCO annotation file (categories sorted by id), read with the dataset's own
    checks, so a defective file (duplicate image ids, not JSON, ...) is refused before training starts."""
    return LabelMap.from_categories(load_coco_json(annotation_file)["categories"])


class DetectionDataModule(LoaderDataModule):
    """Train and validation loaders over COCO-format data.

    Args:
        train_images, train_annotations: the training images folder and COCO JSON; the label map
            (and so the number of classes) comes from this file's ``categories``.
        val_images, val_annotations: the validation split, scored with COCO metrics.
        batch_size: images per process (per GPU under DDP).
        num_workers: loader processes per process.
        image_size: the network input, in pixels: a side, or ``[height, width]``.
        augment: training pipeline, ``ssd`` | ``ssdlite`` | ``sim2real`` | ``light`` | ``mosaic`` | ``none``
            (:func:`detector.data.transforms.build_transforms`).
        close_mosaic: with ``augment: mosaic``, train the last this many epochs without the mosaic
            (Ultralytics' ``close_mosaic``; :class:`detector.training.mosaic.CloseMosaic` switches it).
        seed: base seed of the augmentation pipelines (workers derive their own).
        missing: ``skip`` (listed images that are absent are left out, named and counted; more than
            half absent stops the run) or ``error`` (any absent image stops it).
        mean, std: RGB normalisation (0..1 scale); linked from the model's preset, never set by hand
            (ImageNet's unless the preset says otherwise).
        label_map: the classes, when they come from a checkpoint (``--ckpt_path``: its weights predict
            them), not from the training annotations; set by the CLI, never by hand.

    Every split's categories are matched to the classes **by name** (:func:`detector.labels.match_categories`):
    a file whose ids are numbered otherwise is read with its own ids. The training file must have exactly
    the classes; a validation file may lack some or have others (those are left out, and said).
    """

    def __init__(
        self,
        train_images: str | None = None,
        train_annotations: str | None = None,
        val_images: str | None = None,
        val_annotations: str | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        image_size: int | list[int] = 320,
        augment: str = "ssd",
        close_mosaic: int = 0,
        seed: int = 0,
        missing: str = "skip",
        mean: list[float] | None = None,
        std: list[float] | None = None,
        label_map: dict[str, list] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, detection_collate)
        self.save_hyperparameters(ignore=["label_map"])  # the model logs it (equal hparams must agree)
        self.train_images = train_images
        self.train_annotations = train_annotations
        self.val_images = val_images
        self.val_annotations = val_annotations
        sides = [image_size] if isinstance(image_size, int) else list(image_size)
        if len(sides) not in (1, 2) or any(int(side) < 1 for side in sides):
            raise ValueError(f"--data.image_size must be a positive side or [height, width] in pixels, got {image_size}")
        self.image_size = image_size
        self.augment = augment
        if close_mosaic < 0:
            raise ValueError(f"close_mosaic must be >= 0 epochs, got {close_mosaic}")
        if close_mosaic and augment != "mosaic":
            raise ValueError(f"close_mosaic={close_mosaic} needs augment: mosaic (augment is {augment!r})")
        self.close_mosaic = close_mosaic
        self.missing = missing
        self.mean = tuple(mean) if mean is not None else IMAGENET_MEAN
        self.std = tuple(std) if std is not None else IMAGENET_STD
        for flag, path in (("train_annotations", train_annotations), ("val_annotations", val_annotations)):
            if path and not Path(path).is_file():
                raise FileNotFoundError(f"--data.{flag} {path}: no such file")
        source = train_annotations or val_annotations
        if source is None:
            raise ValueError("give --data.train_annotations (or --data.val_annotations for validate)")
        self.label_map = LabelMap.from_dict(label_map) if label_map else read_label_map(source)
        self.train_dataset: CocoDetection | None = None
        self.val_dataset: CocoDetection | None = None

    @property
    def has_validation(self) -> bool:
        return bool(self.val_annotations)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_dataset is None:
            if not (self.train_images and self.train_annotations):
                raise ValueError("fit needs --data.train_images and --data.train_annotations")
            transform = build_transforms(self.augment, self.image_size, train=True, mean=self.mean, std=self.std,
                                         seed=self.seed)
            self.train_dataset = CocoDetection(self.train_images, self.train_annotations, transform,
                                               labels_by_name=self.label_map, missing=self.missing,
                                               unknown_categories="ignore")
            match = self.train_dataset.category_match
            if match.missing or match.unmatched:
                raise ValueError(f"the training categories must be the model's classes {list(self.label_map.names)}: "
                                 f"{match.describe()}")
        if stage in ("fit", "validate") and self.val_dataset is None and self.val_annotations:
            if not self.val_images:
                raise ValueError("--data.val_annotations needs --data.val_images")
            # The input tools/eval.py and the Predictor give the model (the training pipeline resizes
            # with OpenCV, and so do the models it trains).
            transform = NetworkInput(self.image_size, self.mean, self.std, resize="opencv")
            self.val_dataset = CocoDetection(self.val_images, self.val_annotations, transform,
                                             labels_by_name=self.label_map, missing=self.missing,
                                             unknown_categories="ignore")
            if not self.val_dataset.category_match.exact:
                rank_zero_warn(self.val_dataset.category_match.describe())
