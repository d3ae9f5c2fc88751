"""``close_mosaic``: the mosaic augmentation on for the first epochs of a run, off for the last ones.

Ultralytics trains its last ``close_mosaic`` epochs (10 by default) without mosaic, so the network
ends on images that look like the ones it will see. No Lightning piece switches an augmentation by
epoch, so this callback does; the dataset's switch reaches its persistent loader workers through
shared memory (:meth:`detector.data.coco.CocoDetection.set_mosaic`).
"""
from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl

__all__ = ["CloseMosaic", "mosaic_epochs"]


def mosaic_epochs(total_epochs: int, close_mosaic: int) -> int:
    """Epochs ``0 .. n-1`` train with mosaic: ``n = max(total_epochs - close_mosaic, 0)``."""
    return max(total_epochs - close_mosaic, 0)


def _total_epochs(trainer: pl.Trainer) -> int:
    """The run's epochs: ``max_epochs``, or for a step budget (``max_epochs=-1``) the epochs that
    ``max_steps`` optimiser steps take."""
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        return int(trainer.max_epochs)
    if trainer.max_steps is not None and trainer.max_steps > 0:
        steps_per_epoch = trainer.num_training_batches / max(trainer.accumulate_grad_batches, 1)
        return math.ceil(trainer.max_steps / steps_per_epoch)
    raise ValueError("close_mosaic needs a bounded run: set trainer.max_epochs or trainer.max_steps")


class CloseMosaic(pl.Callback):
    """Turns the training set's mosaic off for the last ``epochs`` epochs of the run.

    At the start of every training epoch (so a resumed run picks the right state) it sets the training
    dataset's mosaic on for epochs before ``total - epochs`` and off from there.

    Args:
        epochs: how many final epochs train without mosaic (0: mosaic throughout).
    """

    def __init__(self, epochs: int) -> None:
        if epochs < 0:
            raise ValueError(f"close_mosaic must be >= 0 epochs, got {epochs}")
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dataset = _train_dataset(trainer)
        enabled = trainer.current_epoch < mosaic_epochs(_total_epochs(trainer), self.epochs)
        if dataset.mosaic_enabled != enabled:
            dataset.set_mosaic(enabled)
            state = "on" if enabled else "off"
            pl_module.print(f"close_mosaic: mosaic {state} from epoch {trainer.current_epoch}")


def _train_dataset(trainer: pl.Trainer) -> Any:
    """The training set of the run's DataModule (:class:`detector.training.datamodule.DetectionDataModule`)."""
    dataset = getattr(getattr(trainer, "datamodule", None), "train_dataset", None)
    if not hasattr(dataset, "set_mosaic"):
        raise TypeError("CloseMosaic needs a DataModule whose train_dataset has set_mosaic "
                        "(detector.data.coco.CocoDetection)")
    return dataset
