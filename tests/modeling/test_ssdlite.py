"""SSDLite model: the paper's figures, shapes, loss, predict, tracing and ONNX export."""
import io

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from detector import PRESETS, build_model
from detector.modeling.ssdlite import resolve_config

SMALL = dict(num_classes=4, width_mult=0.35, image_size=128)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_model("ssdlite_mobilenetv2", **SMALL).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))


def test_paper_figures_width_1_coco_300():
    """MobileNetV2 paper, table 6: SSDLite 4.3M parameters, 0.8B multiply-adds (within 10%)."""
    model = build_model("ssdlite_mobilenetv2", num_classes=91, width_mult=1.0, image_size=300).eval()
    params = sum(p.numel() for p in model.parameters())
    assert 0.9 * 4.3e6 <= params <= 1.1 * 4.3e6, params
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 300, 300))
    macs = counter.get_total_flops() / 2
    assert 0.9 * 0.8e9 <= macs <= 1.1 * 0.8e9, macs
    assert model.anchors.shape == (1917, 4)
    assert model.feature_sizes == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


@pytest.mark.parametrize("reduce, expected", [(True, 2034), (False, 3234)])
def test_anchor_count_at_320(reduce, expected):
    model = build_model(num_classes=3, width_mult=0.35, image_size=320, reduce_boxes_in_lowest_layer=reduce)
    assert model.feature_sizes == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert model.anchors.shape == (expected, 4)
    with torch.no_grad():
        cls_logits, bbox = model.eval()(torch.zeros(1, 3, 320, 320))
    assert cls_logits.shape == (1, expected, 3) and bbox.shape == (1, expected, 4)


@pytest.mark.parametrize("neck", ["ssdlite", "fpn"])
def test_stride8_level_adds_a_first_level(neck):
    """Seven levels at 320: C3's 40x40 first (three boxes per cell, the lowest-layer rule moves with
    it), then the usual six: 40*40*3 + (20*20 + 10*10 + 5*5 + 3*3 + 2*2 + 1) * 6 = 4800 + 3234."""
    model = build_model(num_classes=3, width_mult=0.35, image_size=320, neck=neck, stride8_level=True).eval()
    assert model.feature_sizes == [(40, 40), (20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert model.anchors.shape == (8034, 4)
    assert model.anchor_generator.num_anchors_per_location() == [3, 6, 6, 6, 6, 6, 6]
    assert (model.anchor_levels == 0).sum() == 4800
    # The first level's boxes sit on the 8-pixel grid.
    first = model.anchors[model.anchor_levels == 0]
    centres = (first[:, :2] + first[:, 2:]) / 2
    assert torch.allclose(centres[::3][:2], torch.tensor([[4.0, 4.0], [12.0, 4.0]]))
    with torch.no_grad():
        cls_logits, bbox = model(torch.zeros(1, 3, 320, 320))
    assert cls_logits.shape == (1, 8034, 3) and bbox.shape == (1, 8034, 4)


def test_stride8_level_trains_its_small_box_on_the_first_level():
    """A 6x6 box at 128 px: its positives are on the stride-8 level (gradients reach C3's head)."""
    torch.manual_seed(0)
    model = build_model(num_classes=3, width_mult=0.35, image_size=128, stride8_level=True, min_scale=0.05,
                        iou_threshold=0.3).train()
    targets = [{"boxes": torch.tensor([[60.0, 60.0, 66.0, 66.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    out = model.compute_loss(torch.randn(2, 3, 128, 128), targets)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss_box"].item() > 0
    assert model.head.box_heads[0][-1].weight.grad.abs().sum() > 0  # the stride-8 level's box head
    assert model.head.box_heads[1][-1].weight.grad.abs().sum() == 0  # C4's boxes are too large to match


def test_defaults():
    config = resolve_config()
    assert config["num_classes"] == 91 and config["image_size"] == [320, 320]
    assert config["reduce_boxes_in_lowest_layer"] is True
    assert set(PRESETS) >= {"ssdlite_mobilenetv2", "ssdlite_fpn_mobilenetv2"}
    with pytest.raises(TypeError, match="no_such_option"):
        resolve_config(no_such_option=1)
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_config("yolo")


def test_forward_shapes(small_model, images):
    # 128 px: maps 8, 4, 2, 1, 1, 1 -> 8*8*3 + (16 + 4 + 1 + 1 + 1) * 6 = 330 anchors.
    assert small_model.feature_sizes == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    assert small_model.anchors.shape == (330, 4)
    assert small_model.image_size == (128, 128)
    assert small_model.config["width_mult"] == 0.35
    with torch.no_grad():
        cls_logits, bbox = small_model(images)
    assert cls_logits.shape == (2, 330, 4) and bbox.shape == (2, 330, 4)


def test_fpn_preset_forward(images):
    model = build_model("ssdlite_fpn_mobilenetv2", **SMALL).eval()
    assert model.config["neck"] == "fpn"
    with torch.no_grad():
        cls_logits, bbox = model(images[:1])
    assert cls_logits.shape == (1, 330, 4) and bbox.shape == (1, 330, 4)


def test_compute_loss_backward(images):
    torch.manual_seed(1)
    model = build_model(**SMALL).train()
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 70.0, 100.0], [80.0, 80.0, 120.0, 110.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    out = model.compute_loss(images, targets)
    assert set(out) >= {"loss", "loss_box", "loss_cls", "num_positives"}
    assert out["num_positives"].item() >= 2
    assert torch.isfinite(out["loss"]) and out["loss_box"].item() > 0
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.head.box_heads[0][1].weight.grad.abs().sum() > 0
    assert model.backbone.features[0][0].weight.grad.abs().sum() > 0


def test_predict_in_original_pixels(small_model, images):
    sizes = [(256, 384), (64, 32)]  # (h, w): x2 / x3 and x0.5 / x0.25
    in_input = small_model.predict(images)
    in_original = small_model.predict(images, image_sizes=sizes)
    assert len(in_original) == 2
    for raw, scaled, (h, w) in zip(in_input, in_original, sizes):
        assert len(raw["boxes"]) > 0
        assert torch.equal(raw["labels"], scaled["labels"]) and torch.equal(raw["scores"], scaled["scores"])
        assert scaled["labels"].min() >= 1 and scaled["labels"].max() <= 3
        torch.testing.assert_close(scaled["boxes"], raw["boxes"] * torch.tensor([w / 128, h / 128] * 2))
        assert scaled["boxes"][:, 0::2].min() >= 0 and scaled["boxes"][:, 0::2].max() <= w
        assert scaled["boxes"][:, 1::2].min() >= 0 and scaled["boxes"][:, 1::2].max() <= h
        assert len(scaled["boxes"]) <= small_model.config["max_detections"]
    # predict == postprocess(forward)
    with torch.no_grad():
        again = small_model.postprocess(*small_model(images), sizes)
    torch.testing.assert_close(again[0]["boxes"], in_original[0]["boxes"])


def test_jit_trace(small_model, images):
    with torch.no_grad():
        traced = torch.jit.trace(small_model, images[:1], check_trace=False)
        expected = small_model(images)
        got = traced(images)  # another batch size than traced with
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_onnx_export(small_model, images):
    import onnx
    import onnxruntime

    buffer = io.BytesIO()
    torch.onnx.export(
        small_model, (images[:1],), buffer, dynamo=False, opset_version=17,
        input_names=["images"], output_names=["cls_logits", "bbox_regression"],
        dynamic_axes={"images": {0: "batch"}, "cls_logits": {0: "batch"}, "bbox_regression": {0: "batch"}},
    )
    onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()))
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    cls_logits, bbox = session.run(None, {"images": images.numpy()})  # batch 2, exported with 1
    with torch.no_grad():
        expected = small_model(images)
    np.testing.assert_allclose(cls_logits, expected[0].numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(bbox, expected[1].numpy(), atol=1e-4, rtol=1e-4)
