"""The driving model shipped in the package: the file is the one recorded, it loads by its zoo name,
and (where the CARLA data is prepared) it still scores its recorded test mAP."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector import Predictor, load_checkpoint
from detector.zoo import get_zoo_model
from detector.zoo.registry import CARLA_TEST_AP, sha256_of

NAME = "carla_ssdlite_mobilenetv2"
REPO = Path(__file__).resolve().parents[2]
CARLA = REPO / "data" / "carla"  # python tools/fetch_dataset.py carla --output data/carla


def test_the_shipped_file_is_the_recorded_one() -> None:
    entry = get_zoo_model(NAME)
    assert entry.cache_path.is_file()
    assert sha256_of(entry.cache_path) == entry.sha256_prefix  # the full sha256, recorded
    assert entry.cache_path.stat().st_size < 8 * 2**20  # a few MB: fit for the repository


def test_it_loads_by_name_with_its_classes_and_input() -> None:
    model, labels = load_checkpoint(f"zoo:{NAME}")
    assert labels.names == ("vehicle", "bike", "motobike", "traffic_light", "traffic_sign")
    assert tuple(model.image_size) == (224, 384)
    # A frame at CARLA's own 640x380: boxes come back in its pixels, with the model's class names.
    frame = np.random.default_rng(0).integers(0, 256, (380, 640, 3), dtype=np.uint8)
    result = Predictor.from_checkpoint(f"zoo:{NAME}").predict(frame)
    assert len(result["boxes"]) > 0 and set(result["names"]) <= set(labels.names)
    boxes = result["boxes"]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 380).all()


@pytest.mark.skipif(not (CARLA / "test.json").is_file(), reason="data/carla is not prepared here")
def test_it_still_scores_its_recorded_test_map() -> None:
    from detector.evaluation.evaluate import evaluate_on_dataset
    from detector.inference import load_runner

    runner, labels = load_runner(f"zoo:{NAME}", device="cpu")
    run, _ = evaluate_on_dataset(runner, labels, CARLA / "images", CARLA / "test.json", num_workers=0, progress=False)
    assert run.metrics["AP"] == pytest.approx(CARLA_TEST_AP, abs=1e-4)
