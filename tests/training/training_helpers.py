"""Arguments of tiny, fast training runs for the training tests; a child-process runner; callbacks
that crash or SIGKILL a run at a chosen point."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback

TRAIN = Path(__file__).resolve().parents[2] / "tools" / "train.py"

# The learning run: a seeded quickstart in miniature (96 px, width 0.35, light augmentation) on
# generated data; tests/training/test_learning.py states the mAP it must reach.
LEARNING_RUN = {
    "data.batch_size": 16, "data.image_size": 96, "data.augment": "light",
    "model.lr": 0.3, "model.warmup_steps": 20, "model.warmup_factor": 0.01, "model.channels_last": True,
    "model.reduce_boxes_in_lowest_layer": False, "model.iou_threshold": 0.3,
    "trainer.max_epochs": 30, "trainer.check_val_every_n_epoch": 30, "trainer.log_every_n_steps": 6,
}


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
        **quiet_cpu_trainer(run_dir, max_epochs=2),
    }
    options.update(overrides)
    return [f"--{key}={value}" for key, value in options.items() if value is not None]


def quiet_cpu_trainer(run_dir: Path, max_epochs: int) -> dict[str, object]:
    """The ``trainer.*`` options of a test run (detector or classifier): one CPU process, no sanity
    validation, a log line every step, no progress bar."""
    return {
        "trainer.accelerator": "cpu",
        "trainer.devices": 1,
        "trainer.max_epochs": max_epochs,
        "trainer.default_root_dir": run_dir,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.num_sanity_val_steps": 0,
        "trainer.log_every_n_steps": 1,
    }


def run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``tools/train.py ARGS`` in a child process that can import this module (for its callbacks).
    ``subprocess.run`` kills the child if it outlives the timeout, so nothing is left running."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(TRAIN), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def output_of(done: subprocess.CompletedProcess) -> str:
    return done.stdout[-3000:] + done.stderr[-3000:]


class SimulatedCrash(RuntimeError):
    """Raised by :class:`CrashAtEpoch`, standing in for a killed process."""


class CrashAtEpoch(Callback):
    """Dies at the start of epoch ``epoch``, after the previous epoch's checkpoints were written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise SimulatedCrash(f"simulated crash at epoch {self.epoch}")


class KillAtStep(Callback):
    """SIGKILLs its own process as step ``step + 1`` starts: a hard kill in the middle of an epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillWhileSaving(Callback):
    """SIGKILLs its own process half-way through writing the checkpoint of step ``step``: the
    serialised bytes are written in two halves, and the process dies between them."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step != self.step:
            return
        real_save = torch.save

        def half_then_die(obj, f, *args, **kwargs) -> None:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            with open(f, "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.fsync(handle.fileno())
                os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_die  # the child process dies in it: nothing to restore
