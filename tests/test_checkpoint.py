"""Checkpoints: round trip, data-only loading, EMA weights preferred."""
import pytest
import torch
from torch import nn

from detector import LabelMap, build_model, load_checkpoint, save_checkpoint
from detector.checkpoint import EMA_PREFIX, MODEL_PREFIX

LABELS = LabelMap((1, 7, 12), ("cat", "dog", "fox"))
CONFIG = dict(num_classes=LABELS.num_classes, width_mult=0.35, image_size=96)


class NotData:
    """Unpickling this needs the class: weights_only loading must refuse it."""

    def __init__(self):
        self.value = 1


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Weights and BatchNorm buffers a fresh build would not have."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # keep the scale: tiny weights would make denormal activations
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))


def outputs(model, images):
    with torch.no_grad():
        return model(images)


def test_round_trip(tmp_path, images):
    model = randomise(build_model("ssdlite_fpn_mobilenetv2", **CONFIG), 0)
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, model, LABELS)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left
    loaded, labels = load_checkpoint(path)
    assert labels == LABELS
    assert not loaded.training
    assert loaded.config["neck"] == "fpn" and loaded.image_size == (96, 96)
    for a, b in zip(outputs(loaded, images), outputs(model, images)):
        assert torch.equal(a, b)
    torch.testing.assert_close(loaded.anchors, model.anchors)


def test_float16_storage_loads_into_the_float32_model(tmp_path, images):
    model = randomise(build_model(**CONFIG), 1)
    save_checkpoint(tmp_path / "half.pt", model, LABELS, dtype=torch.float16)
    raw = torch.load(tmp_path / "half.pt", weights_only=True)["state_dict"]
    assert {v.dtype for v in raw.values() if v.is_floating_point()} == {torch.float16}
    assert raw[MODEL_PREFIX + "backbone.features.0.1.num_batches_tracked"].dtype == torch.int64  # integers kept
    loaded, _ = load_checkpoint(tmp_path / "half.pt")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    for name, value in model.state_dict().items():  # each weight rounded to float16, no more
        if value.is_floating_point():
            torch.testing.assert_close(loaded.state_dict()[name], value.half().float(), rtol=0, atol=0)


def test_layout(tmp_path):
    model = build_model(**CONFIG)
    save_checkpoint(tmp_path / "m.pt", model, LABELS)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(raw) == {"state_dict", "detector"}
    assert all(k.startswith(MODEL_PREFIX) for k in raw["state_dict"])
    assert raw["detector"]["label_map"] == LABELS.to_dict()
    assert raw["detector"]["config"]["pretrained_backbone"] == "none"


def test_code_needing_file_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "detector": NotData()}, path)
    with pytest.raises(ValueError, match="weights_only") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a detector checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_ema_weights_preferred(tmp_path, images):
    model = randomise(build_model(**CONFIG), 1)
    ema = randomise(build_model(**CONFIG), 2)
    save_checkpoint(tmp_path / "plain.pt", model, LABELS)
    checkpoint = torch.load(tmp_path / "plain.pt", weights_only=True)
    checkpoint["state_dict"].update({EMA_PREFIX + k: v for k, v in ema.state_dict().items()})
    torch.save(checkpoint, tmp_path / "ema.ckpt")

    loaded, _ = load_checkpoint(tmp_path / "ema.ckpt")
    for a, b in zip(outputs(loaded, images), outputs(ema, images)):
        assert torch.equal(a, b)
    plain, _ = load_checkpoint(tmp_path / "ema.ckpt", prefer_ema=False)
    for a, b in zip(outputs(plain, images), outputs(model, images)):
        assert torch.equal(a, b)
    assert not torch.equal(outputs(loaded, images)[0], outputs(plain, images)[0])
