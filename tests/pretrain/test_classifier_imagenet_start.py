"""The classifier started from the zoo's TFLite ImageNet MobileNetV2: its preset pads as TF does, the
folded BatchNorm gets statistics before the first step, and a few steps on a new task train."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import detector.zoo.registry as registry
from classifier_helpers import tiny_args
from detector.pretrain.cli import main
from detector.pretrain.model import load_classifier
from detector.zoo import zoo_classifiers

CORAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coral-mobilenetv2"
QUANT = "mobilenet_v2_1.0_224_imagenet_quant"


def test_fit_from_the_imagenet_classifier(colour_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not CORAL.is_dir():
        pytest.skip(f"{CORAL} is absent")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    entries = {name: dataclasses.replace(entry, url=(CORAL / Path(entry.url).name).as_uri())
               for name, entry in zoo_classifiers().items()}
    monkeypatch.setattr(registry, "_classifiers", lambda: entries)
    run = tmp_path / "run"
    main(["fit", *tiny_args(colour_data / "train", colour_data / "val", run, **{
        "model.width_mult": 1.0, "model.preset": "mobilenet_v2_tf", "model.pretrained": f"zoo:{QUANT}",
        "trainer.max_epochs": 1, "data.image_size": 64})])
    model, meta = load_classifier(run / "checkpoints" / "last.ckpt")
    assert meta["config"]["padding"] == "tf_same" and len(meta["class_names"]) == 4
    # The trunk's BatchNorm no longer holds identity statistics: they were measured on the colours.
    norm = model.trunk.features[0][1]
    assert not torch.allclose(norm.running_var + norm.eps, torch.ones_like(norm.running_var), rtol=0, atol=1e-6)
