"""Training tests: a tiny synthetic COCO set and the CLI arguments of a tiny, fast run."""
from __future__ import annotations

from pathlib import Path

import pytest

from detector.data.synthetic import SyntheticConfig, make_synthetic
from detector.training.cli import main

from training_helpers import LEARNING_RUN, tiny_args


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 train and 5 val images of 128x128 shapes (5 val images: odd, so DDP pads a batch)."""
    root = tmp_path_factory.mktemp("tiny_coco")
    make_synthetic(root, num_train=12, num_val=5, seed=3, config=SyntheticConfig(image_size=128, clutter=2))
    return root


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(data, run)``: 96 train images (180 steps of 16) and 25 val images (odd: DDP pads a batch) of
    96x96 shapes, and the folder of the run trained on them."""
    data = tmp_path_factory.mktemp("learning_data")
    make_synthetic(data, num_train=96, num_val=25, seed=0, config=SyntheticConfig(
        image_size=96, min_size=24, max_objects=3, small_fraction=0.0, clutter=2))
    run = tmp_path_factory.mktemp("learning_run")
    main(["fit", *tiny_args(data, run, **LEARNING_RUN)])
    return data, run
