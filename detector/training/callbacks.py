"""Checkpointing shared by detector and classifier training, in the run's own ``checkpoints/`` folder:
never a half-written file, never a file that runs code on loading, and ``last.ckpt`` always fresh."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from detector.checkpoint import atomic_save, load_data

__all__ = ["AtomicCheckpointIO", "RunCheckpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, but written to a temporary file and renamed into place, so a run
    killed mid-write keeps the previous checkpoint intact; and read as data only, so resuming
    (``--ckpt_path``) from a file that would run code on unpickling refuses it before it runs."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_data(path, map_location)  # weights_only=True whatever the caller asks


class RunCheckpoint(ModelCheckpoint):
    """``DIR/checkpoints/best.ckpt`` (the best ``monitor`` value at validation) and
    ``DIR/checkpoints/last.ckpt``, where ``DIR`` is ``--trainer.default_root_dir``, whatever the loggers.

    ``last.ckpt`` is written at the end of every training epoch, whatever the validation interval,
    and, with ``save_last_every_n_steps=N``, also every ``N`` optimiser steps: a kill loses at most
    that much work, and ``fit --ckpt_path DIR/checkpoints/last.ckpt`` resumes. It is written by this
    class through ``trainer.save_checkpoint`` (Lightning's own ``save_last`` writes it only when a
    top-k checkpoint is written at the same step), so ``ModelCheckpoint`` here handles ``best.ckpt`` only.

    Args:
        monitor, mode, filename, save_top_k, every_n_train_steps, every_n_epochs, verbose: as
            ``ModelCheckpoint``'s, for ``best.ckpt``. Without a validation split nothing is ranked, and
            only ``last.ckpt`` is kept.
        save_last: write ``last.ckpt`` (at every epoch end).
        save_last_every_n_steps: also write ``last.ckpt`` every this many training steps (unset: epoch
            ends only).
    """

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
        save_last_every_n_steps: int | None = None,
    ) -> None:
        super().__init__(
            monitor=monitor,
            mode=mode,
            filename=filename,
            save_last=False,  # last.ckpt: written below
            save_top_k=save_top_k,
            every_n_train_steps=every_n_train_steps,
            every_n_epochs=every_n_epochs,
            verbose=verbose,
            auto_insert_metric_name=False,
            enable_version_counter=False,  # best.ckpt is replaced, never best-v1.ckpt
        )
        if save_last_every_n_steps is not None and save_last_every_n_steps < 1:
            raise ValueError(f"save_last_every_n_steps must be at least 1, got {save_last_every_n_steps}")
        self.write_last = save_last
        self.save_last_every_n_steps = save_last_every_n_steps
        self._last_written_step: int | None = None
        self._last_written_choice: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        datamodule = trainer.datamodule
        if self.monitor is not None and datamodule is not None and not getattr(datamodule, "has_validation", True):
            # No validation split: nothing to rank by, so keep only last.ckpt.
            self.monitor, self.save_top_k = None, 0
        super().setup(trainer, pl_module, stage)

    @property
    def last_path(self) -> Path:
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def _write_last(self, trainer: pl.Trainer) -> None:
        if self.write_last and not trainer.sanity_checking and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.last_path, weights_only=False)  # every rank calls it; rank 0 writes
            self._last_written_step = trainer.global_step
            self._last_written_choice = getattr(trainer.lightning_module, "weights_choice", None)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every, step = self.save_last_every_n_steps, trainer.global_step
        # Once per step: with gradient accumulation several batches end at the same step.
        if every and step % every == 0 and step != self._last_written_step:
            self._write_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._write_last(trainer)  # after this epoch's validation, which runs before this hook

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)  # ranks this validation (best.ckpt)
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        summary = getattr(pl_module, "validation_summary", "")
        if not summary and self.monitor in trainer.callback_metrics:
            summary = f"{self.monitor} {float(trainer.callback_metrics[self.monitor]):.4f}"
        best = ""
        current = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if current is not None and self.save_top_k != 0:
            # Lightning ranks this validation now or at this epoch's end: the best so far includes it.
            scores = [float(current)] + ([float(self.best_model_score)] if self.best_model_score is not None else [])
            value = max(scores) if self.mode == "max" else min(scores)
            best = f"; best {self.monitor} {value:.4f} -> {Path(self.dirpath) / (self.filename + self.FILE_EXTENSION)}"
        rank_zero_info(f"validation, epoch {trainer.current_epoch} step {trainer.global_step}: {summary}{best}")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The run's closing summary: where its checkpoints are and what they hold."""
        lines = [f"fit ended at epoch {trainer.current_epoch}, step {trainer.global_step}"]
        if self.write_last:
            lines.append(f"last.ckpt (every weight; resume with --ckpt_path) -> {self.last_path}")
        if self.best_model_path:
            lines.append(f"best.ckpt ({self.monitor} {float(self.best_model_score):.4f}) -> {self.best_model_path}")
        elif self.monitor is not None:
            every = trainer.check_val_every_n_epoch
            lines.append(f"no best.ckpt: no validation ran (it runs every {every} epoch(s), "
                         "--trainer.check_val_every_n_epoch, and at none of this run's ends): use last.ckpt")
        lines.extend(getattr(pl_module, "fit_summary", lambda: [])())
        rank_zero_info("\n  ".join(lines))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # Stopped mid-epoch (max_steps, a stop request), or the end-of-fit EMA / raw comparison
        # (detector.training.weights_choice) chose after the last write.
        if (trainer.global_step != self._last_written_step
                or getattr(pl_module, "weights_choice", None) != self._last_written_choice):
            self._write_last(trainer)
