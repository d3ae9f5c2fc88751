"""TF's SAME padding: the pad amounts by hand, and the padded conv against an explicit F.pad + conv."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detector.modeling.padding import TFSameConv2d, same_padding, use_tf_same_padding
from detector.modeling.ssdlite import build_model


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [
    (300, 3, 2, (0, 1)),  # out 150: (150 - 1) * 2 + 3 - 300 = 1, the odd pixel after
    (75, 3, 2, (1, 1)),  # out 38: 37 * 2 + 3 - 75 = 2
    (2, 3, 2, (0, 1)),  # out 1: 0 + 3 - 2 = 1
    (10, 1, 2, (0, 0)),  # a strided 1x1 needs none
    (7, 3, 1, (1, 1)),  # stride 1: k // 2 on both sides, as PyTorch's padding=1
])
def test_same_padding_by_hand(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


@pytest.mark.parametrize(("height", "width"), [(300, 300), (75, 150), (19, 10)])
def test_tf_same_conv_is_explicit_pad_then_valid_conv(height, width):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    same = use_tf_same_padding(nn.Sequential(conv))[0]
    assert isinstance(same, TFSameConv2d) and same.weight is conv.weight  # the same tensors
    x = torch.randn(1, 4, height, width)
    pads = (*same_padding(width, 3, 2), *same_padding(height, 3, 2))  # F.pad: (left, right, top, bottom)
    expected = F.conv2d(F.pad(x, pads), conv.weight, conv.bias, stride=2, groups=2)
    got = same(x)
    assert got.shape[-2:] == ((height + 1) // 2, (width + 1) // 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_even_input_reads_another_window_than_symmetric_padding():
    """On an even side the two paddings give the same size but different numbers (a pixel's shift)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
    x = torch.randn(1, 1, 8, 8)
    same = use_tf_same_padding(nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)))[0]
    same.weight = conv.weight
    assert same(x).shape == conv(x).shape and not torch.allclose(same(x), conv(x))


def test_tf_same_model_keeps_parameter_names_and_replaces_only_strided_convs():
    symmetric = build_model(num_classes=3, width_mult=0.35, image_size=96)
    tf_same = build_model(num_classes=3, width_mult=0.35, image_size=96, padding="tf_same")
    assert list(symmetric.state_dict()) == list(tf_same.state_dict())
    strided = [m for m in symmetric.modules() if isinstance(m, nn.Conv2d) and max(m.stride) > 1]
    replaced = [m for m in tf_same.modules() if isinstance(m, TFSameConv2d)]
    assert len(replaced) == len(strided) == 9  # MobileNetV2: the stem and four stride-2 blocks; 4 extra layers
    assert all(max(m.stride) == 1 for m in tf_same.modules() if type(m) is nn.Conv2d)
    with pytest.raises(ValueError, match="padding"):
        build_model(num_classes=3, width_mult=0.35, image_size=96, padding="valid")
