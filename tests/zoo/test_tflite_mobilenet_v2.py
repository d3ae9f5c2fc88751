"""TFLite's MobileNetV2 ImageNet classifiers, converted: against TFLite's own recorded outputs on real
photos, the dequantisation by hand, the zoo's fetch and checksum, the detector's ImageNet start.

The ``.tflite`` files and photos come from ``../shared/data`` (copied into a temporary hub cache
through a ``file://`` URL, as a download would place them); the tests skip when it is absent. TFLite's
outputs were recorded by ``python tools/tflite_equivalence.py --record tests/zoo/tflite_mobilenet_v2_reference.json``
(TFLite's interpreter from ``ai-edge-litert`` 2.3.0, in ``make litert-env``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import detector.zoo.registry as registry
from detector.modeling.ssdlite import build_model
from detector.pretrain.model import MobileNetV2Classifier, load_classifier
from detector.pretrain.predict import ClassifierPredictor
from detector.zoo import zoo_classifier_checkpoint, zoo_classifiers
from detector.zoo.tflite_mobilenet_v2 import CONFIG, read_operators, read_state_dict

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
CORAL = SHARED / "coral-mobilenetv2"
RECORD = json.loads((Path(__file__).parent / "tflite_mobilenet_v2_reference.json").read_text())
QUANT = "mobilenet_v2_1.0_224_imagenet_quant"
# TFLite rounds the logits to the file's output scale of the last conv (0.099 for the uint8 file, 0.063
# for the int8 one) before its softmax; one such step moves a probability p by p(1 - p) x 0.099, up to
# 0.025 (6.3 output steps of 1/256). Measured over 16 photos: at most 17.6 steps (0.069) apart from our
# float network; 20 steps (0.078, about three logit steps) is the bound.
PROBABILITY_GAP = 20 / 256


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The zoo classifiers published from the shared copies at ``file://`` URLs, into an empty hub cache."""
    if not CORAL.is_dir():
        pytest.skip(f"{CORAL} is absent")
    hub_dir = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub_dir))
    entries = {}
    for name, entry in zoo_classifiers().items():
        source = CORAL / Path(entry.url).name
        entries[name] = dataclasses.replace(entry, url=source.as_uri())
    monkeypatch.setattr(registry, "_classifiers", lambda: entries)
    return hub_dir


def test_the_entries_pin_coral_files_by_commit_and_sha256() -> None:
    for entry in zoo_classifiers().values():
        assert entry.url.startswith(registry.CORAL_TEST_DATA) and len(entry.sha256_prefix) == 64
        local = CORAL / Path(entry.url).name
        if local.is_file():
            assert hashlib.sha256(local.read_bytes()).hexdigest() == entry.sha256_prefix


def test_dequantisation_and_layout_by_hand() -> None:
    if not CORAL.is_dir():
        pytest.skip(f"{CORAL} is absent")
    path = CORAL / "mobilenet_v2_1.0_224_quant.tflite"
    operators, image = read_operators(path.read_bytes())
    state, pre = read_state_dict(path)
    # The input: uint8 with scale 1/128 and zero point 128, so q = 255 stands for (255 - 128) / 128.
    assert (255 / 255 - pre["mean"][0]) / pre["std"][0] == pytest.approx((255 - 128) / 128, abs=1e-6)
    first, depthwise = operators[0], operators[1]
    assert (first.kind, depthwise.kind) == ("CONV_2D", "DEPTHWISE_CONV_2D")
    weights = first.inputs[1]  # [out, kh, kw, in], one scale and zero point
    q = int(weights.data[5, 2, 1, 0])
    expected = (q - int(weights.zero_point[0])) * float(weights.scale[0])
    assert state["trunk.features.0.0.weight"][5, 0, 2, 1].item() == pytest.approx(expected, rel=1e-6)
    kernel = depthwise.inputs[1]  # [1, kh, kw, C]
    q = int(kernel.data[0, 1, 2, 7])
    expected = (q - int(kernel.zero_point[0])) * float(kernel.scale[0])
    assert state["trunk.features.1.conv.0.0.weight"][7, 0, 1, 2].item() == pytest.approx(expected, rel=1e-6)
    bias = first.inputs[2]  # int32, zero point 0, scale = input scale x weight scale
    assert state["trunk.features.0.1.bias"][3].item() == pytest.approx(int(bias.data[3]) * float(bias.scale[0]),
                                                                       rel=1e-6)
    # BatchNorm is an identity: the folded conv and its bias are the whole layer.
    bn = MobileNetV2Classifier(**CONFIG).trunk.features[0][1]
    torch.testing.assert_close(state["trunk.features.0.1.running_var"] + bn.eps, torch.ones(32))
    assert state["classifier.1.weight"].shape == (1001, 1280)
    assert image.shape == (1, 224, 224, 3)


def test_a_file_that_is_not_tflite_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        read_state_dict(bogus)


@pytest.mark.parametrize("name", sorted(RECORD))
def test_top1_equals_tflites_on_every_recorded_photo(name: str, hub: Path) -> None:
    predictor = ClassifierPredictor.from_checkpoint(f"zoo:{name}")
    assert (hub / "checkpoints" / Path(RECORD[name]["url"]).name).is_file()  # fetched into the hub cache
    rows = [row for row in RECORD[name]["photos"] if (SHARED / row["photo"]).is_file()]
    assert len(rows) >= 10
    for row in rows:
        path = SHARED / row["photo"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["file_sha256"], path
    probabilities = predictor.probabilities([SHARED / row["photo"] for row in rows]).double().numpy()
    for row, ours in zip(rows, probabilities):
        reference = row["tflite_top5"]
        assert int(np.argmax(ours)) == reference[0][0], (row["photo"], predictor.class_names[reference[0][0]])
        for index, probability in reference:
            assert abs(ours[index] - probability) <= PROBABILITY_GAP, (row["photo"], index)


def test_zoo_checkpoint_names_classes_and_refuses_a_corrupt_cache(hub: Path) -> None:
    checkpoint = zoo_classifier_checkpoint(f"zoo:{QUANT}", progress=False)
    meta = checkpoint["classifier"]
    assert meta["class_names"][0] == "background" and len(meta["class_names"]) == 1001
    assert meta["class_names"][89] == "macaw" and meta["config"]["padding"] == "tf_same"
    cached = hub / "checkpoints" / "mobilenet_v2_1.0_224_quant.tflite"
    cached.write_bytes(cached.read_bytes()[:-10])
    with pytest.raises(ValueError, match="corrupt"):
        zoo_classifier_checkpoint(f"zoo:{QUANT}", progress=False)


def test_the_detector_starts_from_the_imagenet_trunk(hub: Path) -> None:
    classifier, _ = load_classifier(f"zoo:{QUANT}")
    detector = build_model("ssdlite_mobilenet_v2_tf", num_classes=3, pretrained_backbone=f"zoo:{QUANT}")
    theirs = classifier.trunk.features.state_dict()
    ours = detector.backbone.features.state_dict()
    assert theirs.keys() == ours.keys()
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
    # The same pixels give the same C5 features through both (the detector pads as TF does too).
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(detector.backbone.eval()(x)[-1], classifier.trunk.features(x))
    with pytest.raises(ValueError, match="ssdlite_mobilenet_v2_tf"):
        build_model("ssdlite_mobilenetv2", num_classes=3, pretrained_backbone=f"zoo:{QUANT}")


def test_predict_tool_prints_top5_imagenet_names(hub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("predict_tool", ROOT / "tools" / "predict.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    status = tool.main(["--checkpoint", f"zoo:{QUANT}", "--input", str(CORAL / "images" / "parrot.jpg"),
                        "--output", str(tmp_path / "out")])
    assert status == 0
    line = [line for line in capsys.readouterr().out.splitlines() if line.startswith("parrot.jpg")][0]
    assert line.split(": ")[1].startswith("macaw 0.99") and line.count(",") == 4
    top = json.loads((tmp_path / "out" / "classifications.json").read_text())[0]["top"]
    assert [entry["class"] for entry in top][0] == "macaw" and len(top) == 5
