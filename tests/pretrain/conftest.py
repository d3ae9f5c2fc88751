"""Classifier tests: a tiny ImageFolder set of solid colours and one short training run on it."""
from __future__ import annotations

from pathlib import Path

import pytest

from classifier_helpers import make_colour_folder, tiny_args
from detector.pretrain.cli import main


@pytest.fixture(scope="session")
def colour_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train/`` (24 images per colour) and ``val/`` (10 per colour, other images) of 4 colours."""
    root = tmp_path_factory.mktemp("colours")
    make_colour_folder(root / "train", per_class=24, seed=0)
    make_colour_folder(root / "val", per_class=10, seed=1)
    return root


@pytest.fixture(scope="session")
def trained_run(colour_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-epoch run (48 steps of 16 images, the full augmentation recipe); returns its folder.

    Eight epochs, not four: at four the model scores 0.875 on val but some colours only just (0.32
    against 0.25 for a red frame), so a test of one image's top-1 hinged on the last bits of the
    run; at eight it scores 1.0 with every top-1 above 0.75."""
    run = tmp_path_factory.mktemp("classifier_run")
    main(["fit", *tiny_args(colour_data / "train", colour_data / "val", run, **{"trainer.max_epochs": 8})])
    return run
