"""The detector learns: a seeded, small run on generated shapes reaches a stated mAP, far above what
the same network scores untrained. A regression in the loss, matching, augmentation or
post-processing stops it learning, and this test fails."""
from __future__ import annotations

import csv
from pathlib import Path

from detector.training.cli import main

from training_helpers import LEARNING_RUN, tiny_args

# Measured here: val mAP 0.060, mAP50 0.136 after 180 steps (about 35 s on one core); untrained,
# both are about 0.001. The floors sit well between the two.
MAP_FLOOR, MAP50_FLOOR = 0.015, 0.05


def final_metrics(run: Path) -> dict[str, float]:
    (metrics_file,) = run.glob("csv/version_*/metrics.csv")
    with open(metrics_file) as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/mAP")]
    return {key: float(value) for key, value in rows[-1].items() if key.startswith("val/mAP")}


def test_detector_learns_shapes_above_a_stated_map(learned_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = learned_run
    trained = final_metrics(run)
    assert trained["val/mAP"] >= MAP_FLOOR and trained["val/mAP50"] >= MAP50_FLOOR, trained

    # The same network and data, untrained: the floors must be far above what it scores.
    untrained_args = tiny_args(data, tmp_path / "untrained", **{**LEARNING_RUN, "trainer.max_epochs": None})
    untrained = main(["validate", *untrained_args]).trainer.callback_metrics
    assert float(untrained["val/mAP50"]) < MAP50_FLOOR / 5 and float(untrained["val/mAP"]) < MAP_FLOOR / 5
