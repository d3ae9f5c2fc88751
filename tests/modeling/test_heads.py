"""SSDLite heads: depthwise 3x3 + BN + ReLU6, then 1x1, flattened in anchor order."""
import pytest
import torch
from torch import nn

from detector.modeling.heads import SSDLiteHead


def test_shapes():
    head = SSDLiteHead([16, 24], [3, 6], num_classes=5).eval()
    features = [torch.randn(2, 16, 4, 4), torch.randn(2, 24, 2, 3)]
    cls_logits, bbox = head(features)
    assert cls_logits.shape == (2, 4 * 4 * 3 + 2 * 3 * 6, 5)
    assert bbox.shape == (2, 4 * 4 * 3 + 2 * 3 * 6, 4)


def test_block_structure():
    head = SSDLiteHead([16], [3], num_classes=5)
    for block, out in ((head.cls_heads[0], 15), (head.box_heads[0], 12)):
        layers = list(block[0]) + [block[1]]
        assert isinstance(layers[0], nn.Conv2d) and layers[0].groups == 16 and layers[0].kernel_size == (3, 3)
        assert isinstance(layers[1], nn.BatchNorm2d) and isinstance(layers[2], nn.ReLU6)
        assert isinstance(layers[3], nn.Conv2d) and layers[3].kernel_size == (1, 1)
        assert (layers[3].in_channels, layers[3].out_channels) == (16, out)


def test_normal_init():
    torch.manual_seed(0)
    head = SSDLiteHead([256], [6], num_classes=91)
    weight = head.cls_heads[0][1].weight
    assert weight.mean().abs().item() < 0.002
    assert weight.std().item() == pytest.approx(0.03, rel=0.05)
    assert torch.count_nonzero(head.cls_heads[0][1].bias) == 0


def test_flatten_order_is_row_column_anchor():
    """Output row (i * W + j) * A + a holds channels a * width .. a * width + width - 1 at (i, j)."""
    head = SSDLiteHead([8], [2], num_classes=3).eval()
    feature = torch.randn(1, 8, 2, 3)
    with torch.no_grad():
        raw = head.cls_heads[0](feature)  # [1, 2 * 3, 2, 3]
        cls_logits, _ = head([feature])
    for i in range(2):
        for j in range(3):
            for a in range(2):
                torch.testing.assert_close(cls_logits[0, (i * 3 + j) * 2 + a], raw[0, a * 3 : a * 3 + 3, i, j])


def test_level_count_mismatch():
    with pytest.raises(ValueError):
        SSDLiteHead([8, 16], [3], num_classes=3)
