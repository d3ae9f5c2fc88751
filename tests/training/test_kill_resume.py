"""Hard kills (SIGKILL) of real training processes, with augmentation on: killed mid-epoch or in the
middle of writing a checkpoint, a run leaves a loadable ``last.ckpt`` and resumes from it to the end."""
from __future__ import annotations

import signal
from pathlib import Path

import torch

from training_helpers import output_of, run_train, tiny_args

# 12 images in batches of 4: 3 steps an epoch, 9 in all; last.ckpt every 2 steps and at epoch ends.
RUN = {"data.augment": "light", "trainer.max_epochs": 3, "trainer.limit_val_batches": 1,
       "checkpoint.save_last_every_n_steps": 2}
STEPS_PER_EPOCH, TOTAL_STEPS = 3, 9


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def resume_to_completion(tiny_coco: Path, run: Path, tmp_path: Path) -> None:
    last = run / "checkpoints" / "last.ckpt"
    done = run_train(["fit", *tiny_args(tiny_coco, run, **RUN), f"--ckpt_path={last}"], tmp_path)
    assert done.returncode == 0, output_of(done)
    final = load(last)
    assert final["global_step"] == TOTAL_STEPS and final["epoch"] == 2
    assert final["lr_schedulers"][0]["last_epoch"] == TOTAL_STEPS
    assert all(torch.isfinite(v).all() for v in final["state_dict"].values() if v.is_floating_point())
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_killed_mid_epoch_resumes_from_the_step_checkpoint(tiny_coco: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Dies as step 5 starts: epoch 1 has done one step (4 = 3 + 1), and last.ckpt was written at step 4.
    killed = run_train(["fit", *tiny_args(tiny_coco, run, **RUN), "--trainer.callbacks+=training_helpers.KillAtStep",
                        "--trainer.callbacks.step=5"], tmp_path)
    assert killed.returncode == -signal.SIGKILL, output_of(killed)
    saved = load(run / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 4 and saved["epoch"] == 1  # mid-epoch: at most 1 step of work lost
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"] == 1
    resume_to_completion(tiny_coco, run, tmp_path)


def test_killed_while_writing_a_checkpoint_keeps_the_previous_one(tiny_coco: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Dies half-way through writing step 4's last.ckpt; step 3's (the end of epoch 0) must remain whole.
    killed = run_train(["fit", *tiny_args(tiny_coco, run, **RUN),
                        "--trainer.callbacks+=training_helpers.KillWhileSaving", "--trainer.callbacks.step=4"],
                       tmp_path)
    assert killed.returncode == -signal.SIGKILL, output_of(killed)
    checkpoints = run / "checkpoints"
    half_written = [p for p in checkpoints.iterdir() if p.name.startswith(".last.ckpt.")]
    assert len(half_written) == 1  # the kill did land mid-write: its temporary file is left behind
    saved = load(checkpoints / "last.ckpt")
    assert saved["global_step"] == STEPS_PER_EPOCH and saved["epoch"] == 0
    resume_to_completion(tiny_coco, run, tmp_path)
