"""An interrupted classifier run resumes exactly: step, schedule, optimizer, weights and EMA."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from classifier_helpers import SimulatedCrash, make_colour_folder, tiny_args
from detector.pretrain.cli import main


def test_interrupted_run_resumes_exactly(tmp_path: Path) -> None:
    data = make_colour_folder(tmp_path / "train", per_class=8, size=24, classes=("blue", "green", "red"))
    # Deterministic batches: no augmentation (its generator is not checkpointed) and no dropout.
    common = {"data.batch_size": 8, "data.image_size": 24, "data.augment": "none", "model.dropout": 0.0,
              "model.ema_decay": 0.9, "trainer.max_epochs": 4}
    straight = tmp_path / "straight"
    main(["fit", *tiny_args(data, None, straight, **common)])

    interrupted = tmp_path / "interrupted"
    with pytest.raises(SimulatedCrash):
        main(["fit", *tiny_args(data, None, interrupted, **common),
              "--trainer.callbacks+=classifier_helpers.CrashAtEpoch", "--trainer.callbacks.epoch=2"])
    last = interrupted / "checkpoints" / "last.ckpt"
    halfway = torch.load(last, map_location="cpu", weights_only=True)
    assert halfway["global_step"] == 6  # two epochs of 3 steps, then the crash
    assert not (interrupted / "checkpoints" / "best.ckpt").exists()  # no val_dir: nothing to rank by
    main(["fit", *tiny_args(data, None, interrupted, **common), f"--ckpt_path={last}"])

    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(last, map_location="cpu", weights_only=True)
    assert (a["global_step"], b["global_step"]) == (12, 12)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 12
    assert b["state_dict"]["ema_model.n_averaged"].item() == 12
    for name, value in a["state_dict"].items():  # weights, BN statistics and the EMA copy
        torch.testing.assert_close(b["state_dict"][name], value, rtol=0, atol=1e-6, msg=name)
    states_a, states_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert len(states_a) == len(states_b) > 0
    for key in states_a:
        momentum_a, momentum_b = states_a[key]["momentum_buffer"], states_b[key]["momentum_buffer"]
        torch.testing.assert_close(momentum_b, momentum_a, rtol=0, atol=1e-6)
