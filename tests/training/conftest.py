"""Training tests: a tiny synthetic COCO set and the CLI arguments of a tiny, fast run."""
from __future__ import annotations

from pathlib import Path

import pytest

from detector.data.synthetic import SyntheticConfig, make_synthetic


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 train and 5 val images of 128x128 shapes (5 val images: odd, so DDP pads a batch)."""
    root = tmp_path_factory.mktemp("tiny_coco")
    make_synthetic(root, num_train=12, num_val=5, seed=3, config=SyntheticConfig(image_size=128, clutter=2))
    return root
