"""mmdetection's SSDLite-MobileNetV2, converted: checked against a recorded manifest of mmdetection's own
state dict (mmdetection is not installed in CI; tools/mmdet_equivalence.py runs the full comparison
against its model code, docs/zoo.md has the result)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from detector.modeling.ssdlite import build_model
from detector.zoo.mmdet_ssdlite import CONFIG, NUM_CLASSES, background_first, convert_state_dict, label_map

MANIFEST = json.loads((Path(__file__).parent / "mmdet_ssdlite_state_dict.json").read_text())["entries"]


def fake_mmdet_state() -> dict[str, torch.Tensor]:
    """Every tensor of mmdetection's state dict, each filled with its own index, so a wrong mapping shows."""
    return {name: torch.full(shape, float(i)) if shape else torch.tensor(i) for i, (name, shape) in enumerate(MANIFEST)}


def test_every_mmdet_tensor_lands_in_our_model_once() -> None:
    state = fake_mmdet_state()
    converted = convert_state_dict(state)
    model = build_model(CONFIG)
    ours = model.state_dict()
    assert set(converted) == set(ours) and len(converted) == len(state) == 480
    assert all(converted[k].shape == ours[k].shape for k in ours)
    model.load_state_dict(converted, strict=True)
    assert sum(p.numel() for p in model.parameters()) == 4228788  # mmdetection's count (the 4.23M)


def test_names_map_as_the_layers_correspond() -> None:
    converted = convert_state_dict(fake_mmdet_state())
    index = {name: i for i, (name, _) in enumerate(MANIFEST)}

    def source_of(ours: str) -> int:
        return int(converted[ours].flatten()[0])

    assert source_of("backbone.features.0.0.weight") == index["backbone.conv1.conv.weight"]
    assert source_of("backbone.features.1.conv.0.0.weight") == index["backbone.layer1.0.depthwise_conv.conv.weight"]
    assert source_of("backbone.features.1.conv.2.running_var") == index["backbone.layer1.0.linear_conv.bn.running_var"]
    assert source_of("backbone.features.13.conv.0.1.bias") == index["backbone.layer5.2.expand_conv.bn.bias"]
    assert source_of("backbone.features.17.conv.2.weight") == index["backbone.layer7.0.linear_conv.conv.weight"]
    assert source_of("backbone.features.18.1.weight") == index["backbone.conv2.bn.weight"]
    assert source_of("neck.extra.2.1.0.weight") == index["neck.extra_layers.2.1.depthwise_conv.conv.weight"]
    assert source_of("head.box_heads.5.1.bias") == index["bbox_head.reg_convs.5.1.bias"]


def test_background_moves_from_last_to_first_for_every_anchor() -> None:
    anchors, classes = 6, NUM_CLASSES + 1
    weight = torch.arange(anchors * classes, dtype=torch.float32).view(-1, 1, 1, 1)  # channel a * 81 + c
    moved = background_first(weight).view(anchors, classes)
    for a in range(anchors):
        assert moved[a, 0] == a * classes + 80  # mmdetection's background
        assert torch.equal(moved[a, 1:], torch.arange(a * classes, a * classes + 80, dtype=torch.float32))


def test_anchors_are_mmdetections() -> None:
    model = build_model(CONFIG)
    # SSDAnchorGenerator's base anchors of the 3x3 level (stride 107, min 202, max 253), hand-computed:
    # centre (53.5, 53.5); sizes 202, sqrt(202 * 253) = 226.07, then 202 * sqrt(2) by 202 / sqrt(2)...
    start = 6 * (20 * 20 + 10 * 10 + 5 * 5)
    first = model.anchors[start:start + 2]
    s_prime = (202 * 253) ** 0.5
    expected = torch.tensor([[53.5 - 101, 53.5 - 101, 53.5 + 101, 53.5 + 101],
                             [53.5 - s_prime / 2, 53.5 - s_prime / 2, 53.5 + s_prime / 2, 53.5 + s_prime / 2]])
    torch.testing.assert_close(first, expected, atol=1e-3, rtol=0)
    wide = model.anchors[start + 2]
    torch.testing.assert_close(wide[2] - wide[0], torch.tensor(202 * 2 ** 0.5), atol=1e-3, rtol=0)
    assert model.anchors.shape == (3234, 4)


def test_label_map_is_cocos_80_classes_with_their_ids() -> None:
    labels = label_map()
    assert labels.num_classes == NUM_CLASSES + 1
    assert labels.category_ids[:12] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13)
    assert labels.names[0] == "person" and labels.names[-1] == "toothbrush" and labels.category_ids[-1] == 90


def test_onnx_runner_keeps_the_per_level_candidates(tmp_path: Path) -> None:
    """topk_per="level" needs each anchor's level: the ONNX runner rebuilds them from the metadata."""
    import numpy as np

    from detector.deploy.onnx_export import export_onnx
    from detector.inference import Predictor
    from detector.zoo.equivalence import randomise

    model = randomise(build_model(CONFIG), seed=3)
    export_onnx(model, label_map(), tmp_path / "mmdet.onnx")
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    torch_result = Predictor.from_model(model, label_map()).predict(frame)
    onnx_result = Predictor.from_checkpoint(tmp_path / "mmdet.onnx").predict(frame)
    assert len(torch_result["boxes"]) == len(onnx_result["boxes"]) == 200  # the detection cap binds
    assert (torch_result["labels"] == onnx_result["labels"]).mean() > 0.98
    np.testing.assert_allclose(onnx_result["scores"], torch_result["scores"], atol=1e-4)
