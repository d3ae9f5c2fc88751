"""A classifier checkpoint is a detector backbone: the detector then computes exactly the trunk's maps."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import mobilenet_v2

from detector import build_model
from detector.pretrain import MobileNetV2Classifier, load_classifier


def assert_same_taps(detector_path: Path, classifier: MobileNetV2Classifier) -> None:
    detector = build_model("ssdlite_mobilenetv2", num_classes=5, width_mult=0.35, image_size=128,
                           pretrained_backbone=str(detector_path)).eval()
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        c4, c5 = detector.backbone(images)
        t4, t5 = classifier.eval().trunk(images)
    assert c4.shape == (2, 192, 8, 8) and c5.shape == (2, 1280, 4, 4)
    torch.testing.assert_close(c4, t4, rtol=0, atol=1e-6)
    torch.testing.assert_close(c5, t5, rtol=0, atol=1e-6)


def test_detector_backbone_equals_classifier_trunk(trained_run: Path) -> None:
    path = trained_run / "checkpoints" / "best.ckpt"
    classifier, _ = load_classifier(path, prefer_ema=False)
    assert_same_taps(path, classifier)


def test_ema_copy_is_not_what_the_detector_loads(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    # A different EMA copy beside the weights, as ema_decay writes it.
    state.update({"ema_model.module." + k[len("model."):]: v + 1 for k, v in list(state.items())
                  if k.startswith("model.") and v.is_floating_point()})
    path = tmp_path / "with_ema.ckpt"
    torch.save(checkpoint, path)
    plain, _ = load_classifier(path, prefer_ema=False)
    assert_same_taps(path, plain)


def test_pretrained_path_loads_trunk_and_fitting_head(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = mobilenet_v2(weights=None, width_mult=0.35, num_classes=4)  # torchvision's layout
    path = tmp_path / "torchvision.pth"
    torch.save(reference.state_dict(), path)

    same = MobileNetV2Classifier(num_classes=4, width_mult=0.35, pretrained=str(path))
    assert same.loaded_head
    torch.testing.assert_close(same.classifier[1].weight, reference.classifier[1].weight, rtol=0, atol=0)
    for name, value in reference.features.state_dict().items():
        torch.testing.assert_close(same.trunk.features.state_dict()[name], value, rtol=0, atol=0)

    other = MobileNetV2Classifier(num_classes=3, width_mult=0.35, pretrained=str(path))
    assert not other.loaded_head  # another number of classes: a fresh head, the trunk still loaded
    torch.testing.assert_close(other.trunk.features[0][0].weight, reference.features[0][0].weight, rtol=0, atol=0)


def test_imagenet_weights_need_width_one() -> None:
    with pytest.raises(ValueError, match="width_mult 1.0"):
        MobileNetV2Classifier(num_classes=1000, width_mult=0.35, pretrained="imagenet")
