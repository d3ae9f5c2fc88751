"""``close_mosaic``: the mosaic on for the first epochs of a run and off for the last ones."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from lightning.pytorch import Callback

from detector.training.cli import main
from detector.training.mosaic import CloseMosaic, mosaic_epochs
from training_helpers import tiny_args


@pytest.mark.parametrize(("total", "close", "expected"), [(12, 10, 2), (4, 10, 0), (20, 0, 20), (3, 1, 2)])
def test_mosaic_epochs(total: int, close: int, expected: int) -> None:
    assert mosaic_epochs(total, close) == expected


class RecordMosaic(Callback):
    """The training set's mosaic state at every training batch, by epoch."""

    def __init__(self) -> None:
        self.seen: dict[int, set[bool]] = {}

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.seen.setdefault(trainer.current_epoch, set()).add(trainer.datamodule.train_dataset.mosaic_enabled)


def test_fit_closes_the_mosaic_for_the_last_epochs(tiny_coco: Path, tmp_path: Path) -> None:
    args = tiny_args(tiny_coco, tmp_path / "run", **{
        "data.augment": "mosaic", "data.close_mosaic": 1, "data.num_workers": 1, "trainer.max_epochs": 3,
        "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 0})
    cli = main(args, run=False)
    assert [c.epochs for c in cli.trainer.callbacks if isinstance(c, CloseMosaic)] == [1]
    record = RecordMosaic()
    cli.trainer.callbacks.append(record)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert record.seen == {0: {True}, 1: {True}, 2: {False}}


def test_a_step_budget_counts_its_epochs() -> None:
    """With ``max_epochs=-1`` the run's epochs come from ``max_steps``: 25 steps of 10 batches = 3 epochs."""
    flags = []
    dataset = SimpleNamespace(mosaic_enabled=True, set_mosaic=flags.append)
    for epoch in range(3):
        trainer = SimpleNamespace(max_epochs=-1, max_steps=25, num_training_batches=10, accumulate_grad_batches=1,
                                  current_epoch=epoch, datamodule=SimpleNamespace(train_dataset=dataset))
        CloseMosaic(1).on_train_epoch_start(trainer, SimpleNamespace(print=lambda *_: None))
    assert flags == [False]  # switched once, at epoch 2 of 0..2


def test_close_mosaic_needs_the_mosaic_pipeline(tiny_coco: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs augment: mosaic"):
        main(tiny_args(tiny_coco, tmp_path / "run", **{"data.augment": "light", "data.close_mosaic": 2}), run=False)
