"""``tools/train_classifier.py``: LightningCLI over :class:`ClassifierModule` and :class:`ClassifierDataModule`.

The run lives in ``--trainer.default_root_dir`` as a detection run does: ``checkpoints/best.ckpt``
(by ``val/top1``) and ``checkpoints/last.ckpt`` written atomically, CSV and TensorBoard logs in
``csv/`` and ``tensorboard/``, the full config beside them; ``fit --ckpt_path .../last.ckpt`` resumes.
"""
from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser

from detector.pretrain.data import ClassifierDataModule
from detector.pretrain.module import ClassifierModule
from detector.training.callbacks import DetectorCheckpoint
from detector.training.cli import DetectorCLI

__all__ = ["ClassifierCLI", "ClassifierCheckpoint", "main"]


class ClassifierCheckpoint(DetectorCheckpoint):
    """``DIR/checkpoints/best.ckpt`` (by ``val/top1``) and ``DIR/checkpoints/last.ckpt``."""

    def __init__(
        self,
        monitor: str | None = "val/top1",
        mode: str = "max",
        filename: str = "best",
        save_last: bool = True,
        save_top_k: int = 1,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(monitor=monitor, mode=mode, filename=filename, save_last=save_last, save_top_k=save_top_k,
                         every_n_train_steps=every_n_train_steps, every_n_epochs=every_n_epochs, verbose=verbose)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # DetectorCheckpoint.setup looks for a detection validation split (val_annotations); this
        # one looks for val_dir, then goes straight to ModelCheckpoint's setup.
        if self.dirpath is None:
            self.dirpath = str(_checkpoint_dir(trainer))
        datamodule = trainer.datamodule
        if self.monitor is not None and datamodule is not None and not getattr(datamodule, "val_dir", None):
            self.monitor, self.save_top_k = None, 0  # nothing to rank by: keep only last.ckpt
        ModelCheckpoint.setup(self, trainer, pl_module, stage)


def _checkpoint_dir(trainer: pl.Trainer) -> str:
    return f"{trainer.default_root_dir}/checkpoints"


def _class_names_of(data: ClassifierDataModule) -> list[str]:
    return list(data.class_names)


class ClassifierCLI(DetectorCLI):
    """Links the data to the model (image size, class names); loggers and atomic checkpoint IO as
    :class:`DetectorCLI`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ClassifierCheckpoint, "checkpoint")
        parser.link_arguments("data.image_size", "model.image_size")
        # The classes come from the training folders, never by hand.
        parser.link_arguments("data", "model.class_names", compute_fn=_class_names_of, apply_on="instantiate")


def main(args: list[str] | None = None, run: bool = True) -> ClassifierCLI:
    return ClassifierCLI(
        ClassifierModule,
        ClassifierDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        trainer_defaults={"default_root_dir": "runs/classifier"},
    )
