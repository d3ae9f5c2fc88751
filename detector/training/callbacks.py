"""Checkpointing that never leaves a half-written file, in the run's own ``checkpoints/`` folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from detector.checkpoint import atomic_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, but written to a temporary file and renamed into place, so a run
    killed mid-write keeps the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_save(checkpoint, path)


class DetectorCheckpoint(ModelCheckpoint):
    """``DIR/checkpoints/best.ckpt`` (by ``val/mAP``) and ``DIR/checkpoints/last.ckpt``, where
    ``DIR`` is ``--trainer.default_root_dir``, whatever the loggers are."""

    def __init__(
        self,
        monitor: str | None = "val/mAP",
        mode: str = "max",
        filename: str = "best",
        save_last: bool = True,
        save_top_k: int = 1,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(
            monitor=monitor,
            mode=mode,
            filename=filename,
            save_last=save_last,
            save_top_k=save_top_k,
            every_n_train_steps=every_n_train_steps,
            every_n_epochs=every_n_epochs,
            verbose=verbose,
            auto_insert_metric_name=False,
            enable_version_counter=False,  # best.ckpt is replaced, never best-v1.ckpt
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        datamodule = trainer.datamodule
        if self.monitor is not None and datamodule is not None and not getattr(datamodule, "val_annotations", None):
            # No validation split: nothing to rank by, so keep only last.ckpt.
            self.monitor, self.save_top_k = None, 0
        super().setup(trainer, pl_module, stage)

    def _ensure_last(self, trainer: pl.Trainer) -> None:
        # Lightning writes last.ckpt only when a top-k checkpoint was written at the same step; a
        # run must always be resumable from its latest state, so write it whenever it is stale.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)
