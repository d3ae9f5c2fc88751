"""The driving models shipped in the package: each file is the one recorded, it loads by its zoo name,
and (where the CARLA data is prepared) it still scores its recorded test mAP."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detector import Predictor, load_checkpoint
from detector.zoo import get_zoo_model
from detector.slicing import FrameView, Slicing
from detector.zoo.registry import CARLA_TEST_AP, DRIVING_TEST_AP, sha256_of

# name -> recorded test mAP (detector/zoo/weights/README.md)
SHIPPED = {"carla_ssdlite_mobilenetv2": CARLA_TEST_AP, "carla_ssdlite_mobilenet_v2_pretrained": DRIVING_TEST_AP}
CARLA_CLASSES = ("vehicle", "bike", "motobike", "traffic_light", "traffic_sign")
REPO = Path(__file__).resolve().parents[2]
CARLA = REPO / "data" / "carla"  # python tools/fetch_dataset.py carla --output data/carla


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_file_is_the_recorded_one(name: str) -> None:
    entry = get_zoo_model(name)
    assert entry.cache_path.is_file()
    assert sha256_of(entry.cache_path) == entry.sha256_prefix  # the full sha256, recorded
    assert entry.cache_path.stat().st_size < 8 * 2**20  # a few MB: fit for the repository


@pytest.mark.parametrize("name", SHIPPED)
def test_it_loads_by_name_with_its_classes_and_input(name: str) -> None:
    model, labels = load_checkpoint(f"zoo:{name}")
    assert labels.names == CARLA_CLASSES
    assert tuple(model.image_size) == (224, 384)
    # A frame at CARLA's own 640x380: boxes come back in its pixels, with the model's class names.
    frame = np.random.default_rng(0).integers(0, 256, (380, 640, 3), dtype=np.uint8)
    result = Predictor.from_checkpoint(f"zoo:{name}").predict(frame)
    assert len(result["boxes"]) > 0 and set(result["names"]) <= set(labels.names)
    boxes = result["boxes"]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 380).all()


@pytest.mark.parametrize("name", ["carla_ssdlite_mobilenet_v2_pretrained"])
def test_the_pretrained_one_is_tfs_network_stored_in_float16(name: str) -> None:
    """Float16 on disk halves the file; loading casts back to the model's float32 (test mAP 0.2718, as float32)."""
    from detector.checkpoint import read_checkpoint

    entry = get_zoo_model(name)
    stored = read_checkpoint(entry.cache_path)
    assert stored["detector"]["config"]["padding"] == "tf_same" and stored["detector"]["config"]["resize"] == "opencv"
    assert {v.dtype for v in stored["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    model, _ = load_checkpoint(f"zoo:{entry.name}")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_the_driving_model_records_its_view_of_wide_frames() -> None:
    """KITTI-wide frames (3.3:1) sliced, 16:9 footage and CARLA's 1.7:1 whole, with no option given (issue #38)."""
    predictor = Predictor.from_checkpoint("zoo:carla_ssdlite_mobilenet_v2_pretrained")
    assert predictor.view.slicing == Slicing() and predictor.view.slice_min_aspect == 2.5
    assert predictor.view.slicing_for(375, 1242) is not None and predictor.view.slicing_for(720, 1280) is None
    assert predictor.view.slicing_for(380, 640) is None
    assert Predictor.from_checkpoint("zoo:carla_ssdlite_mobilenetv2").view == FrameView()  # records none


@pytest.mark.skipif(not (CARLA / "test.json").is_file(), reason="data/carla is not prepared here")
@pytest.mark.parametrize("name", SHIPPED)
def test_it_still_scores_its_recorded_test_map(name: str) -> None:
    from detector.evaluation.evaluate import evaluate_on_dataset
    from detector.inference import load_runner

    runner, labels = load_runner(f"zoo:{name}", device="cpu")
    run, _ = evaluate_on_dataset(runner, labels, CARLA / "images", CARLA / "test.json", num_workers=0, progress=False)
    assert run.metrics["AP"] == pytest.approx(SHIPPED[name], abs=1e-4)
