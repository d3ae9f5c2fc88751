"""The EMA / raw weights comparison (issue #36): validation scores both copies, ``val/mAP`` is the better
one's, every checkpoint records which, and the loaders follow the record."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from detector.checkpoint import EMA_PREFIX, MODEL_PREFIX, WEIGHTS_KEY, load_checkpoint, model_state_dict, read_checkpoint
from detector.training.cli import main
from detector.training.weights_choice import WeightsChoice

from training_helpers import tiny_args


def checkpoint_with(use: str | None) -> dict:
    state = {MODEL_PREFIX + "w": torch.zeros(2), EMA_PREFIX + "w": torch.ones(2)}
    meta = {} if use is None else {WEIGHTS_KEY: WeightsChoice(use, 0.1, 0.2, 7).to_dict()}
    return {"state_dict": state, "detector": meta}


@pytest.mark.parametrize(("use", "prefer_ema", "expected"), [
    (None, None, 1.0),      # no record (older checkpoints): the EMA, as before
    ("ema", None, 1.0),
    ("model", None, 0.0),   # the run found the raw weights better: they are loaded
    ("model", True, 1.0),   # an explicit choice wins over the record
    ("ema", False, 0.0),
])
def test_loaders_follow_the_record(use: str | None, prefer_ema: bool | None, expected: float) -> None:
    assert model_state_dict(checkpoint_with(use), prefer_ema)["w"].tolist() == [expected] * 2


def test_compare_breaks_ties_towards_the_ema_and_warns_from_one_point() -> None:
    assert WeightsChoice.compare(0.3, 0.3, 1).use == "ema"
    assert WeightsChoice.compare(0.3, 0.30001, 1).use == "model"
    assert not WeightsChoice.compare(0.30, 0.309, 1).ema_far_worse
    assert WeightsChoice.compare(0.30, 0.311, 1).ema_far_worse
    assert "WARNING" in WeightsChoice.compare(0.1, 0.3, 1).describe()


def read_csv_log(run: Path) -> list[dict[str, str]]:
    (metrics,) = run.glob("csv/version_*/metrics.csv")
    with open(metrics, newline="") as handle:
        return list(csv.DictReader(handle))


def test_validation_scores_both_copies_and_checkpoints_record_the_better(tiny_coco: Path, tmp_path: Path) -> None:
    # An EMA far too slow for a 6-step run (decay 0.9998, no ramp): the raw weights must win, and be loaded.
    run = tmp_path / "run"
    main(["fit", *tiny_args(tiny_coco, run, **{"model.ema_decay": 0.9998, "model.ema_warmup_steps": 0,
                                               "model.lr": 0.05, "trainer.max_epochs": 2})])
    rows = [r for r in read_csv_log(run) if r.get("val/mAP")]
    assert len(rows) == 2
    for row in rows:
        assert float(row["val/mAP"]) == max(float(row["val/mAP_ema"]), float(row["val/mAP_raw"]))
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    record = last["detector"][WEIGHTS_KEY]
    assert record["global_step"] == last["global_step"] == 6
    assert record["val_mAP_raw"] == pytest.approx(float(rows[-1]["val/mAP_raw"]))
    assert record["use"] == ("ema" if record["val_mAP_ema"] >= record["val_mAP_raw"] else "model")
    model, _ = load_checkpoint(run / "checkpoints" / "last.ckpt")
    expected = model_state_dict(last, prefer_ema=record["use"] == "ema")
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_the_end_of_fit_compares_when_the_last_validation_was_earlier(tiny_coco: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Validation at epoch 2 only; the run stops at step 7, mid-epoch 2.
    main(["fit", *tiny_args(tiny_coco, run, **{"model.ema_decay": 0.9, "model.ema_warmup_steps": 2,
                                               "trainer.max_epochs": 3, "trainer.max_steps": 7,
                                               "trainer.check_val_every_n_epoch": 2})])
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 7 and last["detector"][WEIGHTS_KEY]["global_step"] == 7
    best = read_checkpoint(run / "checkpoints" / "best.ckpt")  # validated at the end of epoch 1 (step 6)
    assert best["detector"][WEIGHTS_KEY]["global_step"] == 6
