"""Runs resume exactly, and a non-finite loss stops the run with the last good weights kept."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector.training.cli import main
from detector.training.module import DetectorModule

from training_helpers import SimulatedCrash, tiny_args


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_interrupted_run_resumes_exactly(tiny_coco: Path, tmp_path: Path) -> None:
    # The EMA ramps over a few steps, so a resume must continue the ramp from the saved n_averaged.
    common = {"model.ema_decay": 0.9, "model.ema_warmup_steps": 5, "trainer.limit_val_batches": 1,
              "trainer.max_epochs": 4}
    straight = tmp_path / "straight"
    main(["fit", *tiny_args(tiny_coco, straight, **common)])

    # The same run dies after epoch 2, then resumes from last.ckpt.
    interrupted = tmp_path / "interrupted"
    with pytest.raises(SimulatedCrash):
        main(["fit", *tiny_args(tiny_coco, interrupted, **common),
              "--trainer.callbacks+=training_helpers.CrashAtEpoch", "--trainer.callbacks.epoch=2"])
    halfway = torch.load(interrupted / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert halfway["global_step"] == 6  # two epochs of 3 steps done, then the crash
    main(["fit", *tiny_args(tiny_coco, interrupted, **common),
          f"--ckpt_path={interrupted / 'checkpoints' / 'last.ckpt'}"])

    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(interrupted / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (a["global_step"], b["global_step"]) == (12, 12)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 12
    assert b["state_dict"]["ema_model.n_averaged"].item() == 12
    for name, value in a["state_dict"].items():  # model, BN statistics and EMA weights
        torch.testing.assert_close(b["state_dict"][name], value, rtol=0, atol=1e-6, msg=name)
    for state_a, state_b in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(state_b["momentum_buffer"], state_a["momentum_buffer"], rtol=0, atol=1e-6)


def test_non_finite_loss_stops_with_step_images_and_a_checkpoint(
    tiny_coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = DetectorModule.training_step

    def poisoned(self: DetectorModule, batch, batch_idx):  # step 2's loss becomes NaN
        if self.global_step == 2:
            monkeypatch.setattr(self.model, "compute_loss", lambda images, targets: {
                k: torch.tensor(float("nan")) for k in ("loss", "loss_box", "loss_cls", "num_positives")})
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DetectorModule, "training_step", poisoned)
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError) as error:
        main(["fit", *tiny_args(tiny_coco, run, **{"trainer.limit_val_batches": 0})])
    message = str(error.value)
    assert "global step 2" in message and ".jpg" in message
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_last_checkpoint_at_every_epoch_end_whatever_the_validation_interval(tiny_coco: Path, tmp_path: Path) -> None:
    # Validation every 5 epochs; the run dies as epoch 1 starts: epoch 0's end must be saved.
    run = tmp_path / "run"
    with pytest.raises(SimulatedCrash):
        main(["fit", *tiny_args(tiny_coco, run, **{"trainer.check_val_every_n_epoch": 5}),
              "--trainer.callbacks+=training_helpers.CrashAtEpoch", "--trainer.callbacks.epoch=1"])
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3 and saved["epoch"] == 0
    assert not (run / "checkpoints" / "best.ckpt").exists()  # nothing validated yet
