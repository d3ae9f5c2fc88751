"""``tools/train.py``: LightningCLI over :class:`DetectorModule` and :class:`DetectionDataModule`."""
from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from detector.training.callbacks import AtomicCheckpointIO, DetectorCheckpoint
from detector.training.datamodule import DetectionDataModule
from detector.training.module import DetectorModule


def _label_map_of(data: DetectionDataModule) -> dict[str, list]:
    return data.label_map.to_dict()


class DetectorCLI(LightningCLI):
    """Links the data to the model (image size, label map) and puts the run in ``default_root_dir``:
    checkpoints in ``checkpoints/``, CSV and TensorBoard logs in ``csv/`` and ``tensorboard/``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(DetectorCheckpoint, "checkpoint")
        parser.link_arguments("data.image_size", "model.image_size")
        # The number of classes and the label map come from the training annotations, never by hand.
        parser.link_arguments("data", "model.label_map", compute_fn=_label_map_of, apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        root = config.get("default_root_dir") or os.getcwd()
        if config.get("logger") in (None, True):
            kwargs["logger"] = [CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tensorboard")]
        if not config.get("plugins"):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def main(args: list[str] | None = None, run: bool = True) -> DetectorCLI:
    return DetectorCLI(
        DetectorModule,
        DetectionDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        # Lightning's 'auto' would pick MPS/GPU when present; 'auto' is right for users, so keep it.
        trainer_defaults={"default_root_dir": "runs/default"},
    )
