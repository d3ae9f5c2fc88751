"""Arguments of a tiny, fast training run for the training tests."""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback


def tiny_args(data: Path, run_dir: Path, **overrides: object) -> list[str]:
    """Arguments of a run small enough for a test: width 0.35 at 128 px, batch 4."""
    options: dict[str, object] = {
        "data.train_images": data / "train",
        "data.train_annotations": data / "train.json",
        "data.val_images": data / "val",
        "data.val_annotations": data / "val.json",
        "data.batch_size": 4,
        "data.num_workers": 0,
        "data.image_size": 128,
        "data.augment": "none",
        "model.width_mult": 0.35,
        "model.optimizer": "sgd",
        "model.lr": 0.01,
        "model.warmup_steps": 2,
        "trainer.accelerator": "cpu",
        "trainer.devices": 1,
        "trainer.max_epochs": 2,
        "trainer.default_root_dir": run_dir,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.num_sanity_val_steps": 0,
        "trainer.log_every_n_steps": 1,
    }
    options.update(overrides)
    return [f"--{key}={value}" for key, value in options.items() if value is not None]


class SimulatedCrash(RuntimeError):
    """Raised by :class:`CrashAtEpoch`, standing in for a killed process."""


class CrashAtEpoch(Callback):
    """Dies at the start of epoch ``epoch``, after the previous epoch's checkpoints were written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise SimulatedCrash(f"simulated crash at epoch {self.epoch}")
