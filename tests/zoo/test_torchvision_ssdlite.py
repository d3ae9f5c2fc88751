"""torchvision's ssdlite320_mobilenet_v3_large, converted: the same raw outputs and the same detections."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detector.data.io import load_image
from detector.modeling.ssdlite import SSDLite, build_model, resolve_config
from detector.zoo.torchvision_ssdlite import CONFIG, convert_state_dict, label_map

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def converted(torchvision_ssdlite: nn.Module) -> SSDLite:
    model = build_model(CONFIG).eval()
    model.load_state_dict(convert_state_dict(torchvision_ssdlite.state_dict()), strict=True)
    return model


def real_frames() -> list[np.ndarray]:
    """Real photos (cars on a highway, raccoons) resized to the network input, as both models see them."""
    paths = sorted((SHARED / "udacity-vehicle-detection" / "test_images").glob("*.jpg"))[:2]
    paths += sorted((SHARED / "raccoon" / "images").glob("raccoon-1*.jpg"))[:1]
    if not paths:
        pytest.skip("../shared/data is absent")
    return [cv2.resize(load_image(p), (320, 320), interpolation=cv2.INTER_LINEAR) for p in paths]


def to_inputs(frames: list[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """torchvision's input (0..1 images) and ours (normalised with the converted config's mean and std)."""
    images = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]
    mean, std = torch.tensor(resolve_config(CONFIG)["mean"]).view(3, 1, 1), torch.tensor(resolve_config(CONFIG)["std"]).view(3, 1, 1)
    return images, torch.stack([(im - mean) / std for im in images])


def test_every_tensor_is_mapped_once(torchvision_ssdlite: nn.Module, converted: SSDLite) -> None:
    state = torchvision_ssdlite.state_dict()
    mapped = convert_state_dict(state)
    assert len(mapped) == len(state) == len(converted.state_dict())
    ours = converted.state_dict()
    assert all(mapped[k].shape == ours[k].shape for k in ours)
    # The tensors themselves are carried over untouched.
    assert sum(int(v.numel()) for v in mapped.values()) == sum(int(v.numel()) for v in state.values())


def test_config_matches_torchvision(torchvision_ssdlite: nn.Module, converted: SSDLite) -> None:
    tv = torchvision_ssdlite
    assert (tv.score_thresh, tv.nms_thresh, tv.detections_per_img, tv.topk_candidates) == (
        CONFIG["score_threshold"], CONFIG["nms_threshold"], CONFIG["max_detections"], CONFIG["topk_candidates"])
    assert list(tv.transform.image_mean) == CONFIG["mean"] and list(tv.transform.image_std) == CONFIG["std"]
    assert sum(p.numel() for p in converted.parameters()) == sum(p.numel() for p in tv.parameters()) == 3440060


def test_anchors_equal_torchvisions(torchvision_ssdlite: nn.Module, converted: SSDLite) -> None:
    tv = torchvision_ssdlite
    image_list, _ = tv.transform([torch.zeros(3, 320, 320)])
    features = list(tv.backbone(image_list.tensors).values())
    expected = tv.anchor_generator(image_list, features)[0]
    # torchvision builds them in float32, we in float64 then round: a few ulps of 320.
    torch.testing.assert_close(converted.anchors, expected, atol=1e-4, rtol=0)


def test_raw_outputs_equal_on_real_and_synthetic_frames(torchvision_ssdlite: nn.Module, converted: SSDLite) -> None:
    frames = real_frames() + [np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8)]
    _, x = to_inputs(frames)
    with torch.no_grad():
        features = list(torchvision_ssdlite.backbone(x).values())
        expected = torchvision_ssdlite.head(features)
        cls_logits, bbox_regression = converted(x)
    torch.testing.assert_close(cls_logits, expected["cls_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(bbox_regression, expected["bbox_regression"], atol=1e-5, rtol=0)


def test_detections_identical_on_real_photos(torchvision_ssdlite: nn.Module, converted: SSDLite) -> None:
    images, x = to_inputs(real_frames())
    with torch.no_grad():
        expected = torchvision_ssdlite(images)
    ours = converted.predict(x, image_sizes=[(320, 320)] * len(images))
    for theirs, mine in zip(expected, ours):
        assert len(theirs["boxes"]) > 0  # random weights still give detections: the test cannot pass empty
        assert torch.equal(mine["labels"], theirs["labels"])
        torch.testing.assert_close(mine["scores"], theirs["scores"], atol=1e-6, rtol=0)
        torch.testing.assert_close(mine["boxes"], theirs["boxes"], atol=1e-3, rtol=0)


def test_label_map_gives_coco_category_ids() -> None:
    labels = label_map()
    assert labels.num_classes == 91
    assert labels.category_ids[0] == 1 and labels.names[0] == "person"
    assert labels.category_ids[2] == 3 and labels.names[2] == "car"
    assert labels.names[11] == "N/A" and labels.category_ids[12] == 13  # COCO's gap at id 12 stays a gap
    assert labels.names[89] == "toothbrush" and labels.category_ids[89] == 90


def test_onnx_export_of_the_converted_model_gives_torchvisions_outputs(
        torchvision_ssdlite: nn.Module, converted: SSDLite, tmp_path: Path) -> None:
    from detector.deploy.onnx_export import export_onnx
    from detector.inference import Predictor

    export_onnx(converted, label_map(), tmp_path / "tv.onnx")
    frames = real_frames()
    images, x = to_inputs(frames)
    with torch.no_grad():
        expected = torchvision_ssdlite(images)
    # The raw-output graph, run by ONNX Runtime, then our post-processing, through the Predictor.
    predictor = Predictor.from_checkpoint(tmp_path / "tv.onnx")
    for frame, theirs in zip(frames, expected):
        mine = predictor.predict(frame)  # already 320x320: the resize is the identity
        assert len(mine["boxes"]) == len(theirs["boxes"]) > 0
        matched = (torch.as_tensor(mine["labels"]) == theirs["labels"]).float().mean()
        assert matched > 0.98  # ONNX Runtime's float32 differs in the last bits: a rare tie may swap
        torch.testing.assert_close(torch.as_tensor(mine["scores"]), theirs["scores"], atol=1e-4, rtol=0)
        assert list(mine["category_ids"][:5]) == [int(label) for label in theirs["labels"][:5]]  # COCO ids
