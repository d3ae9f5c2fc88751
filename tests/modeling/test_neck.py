"""Feature-pyramid adapters: SSDLite extra layers and FPN-lite, at every width."""
import pytest
import torch
from torch import nn

from detector.modeling.backbone import MobileNetV2Backbone
from detector.modeling.neck import EXTRA_CHANNELS, FPNLiteNeck, SSDLiteNeck, build_neck

WIDTHS = [0.35, 0.5, 0.75, 1.0, 1.4]


def backbone_channels(width):
    """C4 and C5 channels of the backbone at ``width``, read from its layers."""
    features = MobileNetV2Backbone(width).features
    return [features[14].conv[0][0].out_channels, features[18][0].out_channels]


def neck_outputs(name, width):
    """The neck on random C4 / C5 maps of a 128 px input (8x8 and 4x4)."""
    g = torch.Generator().manual_seed(0)
    c4, c5 = backbone_channels(width)
    features = [torch.randn(1, c4, 8, 8, generator=g), torch.randn(1, c5, 4, 4, generator=g)]
    neck = build_neck(name, [c4, c5], width).eval()
    with torch.no_grad():
        return features, neck(features)


@pytest.fixture(scope="module")
def outputs():
    return {(name, w): neck_outputs(name, w) for name in ("ssdlite", "fpn") for w in WIDTHS}


def test_backbone_channels():
    assert backbone_channels(1.0) == [576, 1280]
    assert backbone_channels(0.35) == [192, 1280]  # torchvision keeps 1280 below width 1
    assert backbone_channels(1.4) == [6 * 136, 1792]


def test_ssdlite_channels_at_width_1(outputs):
    _, maps = outputs[("ssdlite", 1.0)]
    assert [m.shape[1] for m in maps] == [576, 1280, 512, 256, 256, 128]
    # 128 px input: strides 16, 32, then halving (rounding up) down to 1.
    assert [m.shape[-1] for m in maps] == [8, 4, 2, 1, 1, 1]


@pytest.mark.parametrize("width", WIDTHS)
def test_ssdlite_extra_channels_scale_with_width(outputs, width):
    features, maps = outputs[("ssdlite", width)]
    assert len(maps) == 6
    assert maps[0] is features[0] and maps[1] is features[1]
    for m, c in zip(maps[2:], (512, 256, 256, 128)):
        assert abs(m.shape[1] - c * width) < 1.0  # truncated, as TF's depth multiplier does
    assert all(torch.isfinite(m).all() for m in maps)


@pytest.mark.parametrize("width", WIDTHS)
def test_fpn_channels_scale_with_width(outputs, width):
    _, maps = outputs[("fpn", width)]
    _, plain = outputs[("ssdlite", width)]
    assert len(maps) == 6
    assert {m.shape[1] for m in maps} == {int(128 * width)}
    assert [m.shape[-2:] for m in maps] == [p.shape[-2:] for p in plain]


@pytest.mark.parametrize("name", ["ssdlite", "fpn"])
def test_channels_grow_with_width(outputs, name):
    for level in range(6):
        channels = [outputs[(name, w)][1][level].shape[1] for w in WIDTHS]
        assert channels == sorted(channels) and channels[0] < channels[-1], (level, channels)


@pytest.mark.parametrize("size, expected", [(320, [20, 10, 5, 3, 2, 1]), (300, [19, 10, 5, 3, 2, 1])])
def test_map_sizes(size, expected):
    backbone = MobileNetV2Backbone(0.35).eval()
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, size, size))
        for name in ("ssdlite", "fpn"):
            maps = build_neck(name, [f.shape[1] for f in features], 0.35).eval()(features)
            assert [tuple(m.shape[-2:]) for m in maps] == [(s, s) for s in expected], name


def test_extra_block_structure():
    neck = SSDLiteNeck([576, 1280], 1.0)
    assert EXTRA_CHANNELS == (512, 256, 256, 128)
    previous = 1280
    for block, out in zip(neck.extra, EXTRA_CHANNELS):
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.groups) for c in convs] == [
            (previous, out // 2, (1, 1), (1, 1), 1),
            (out // 2, out // 2, (3, 3), (2, 2), out // 2),
            (out // 2, out, (1, 1), (1, 1), 1),
        ]
        assert sum(isinstance(m, nn.ReLU6) for m in block.modules()) == 3
        previous = out


def test_fpn_fuses_top_down():
    """A change in the coarsest input map reaches the finest FPN output, not the plain neck's."""
    torch.manual_seed(0)
    fpn = FPNLiteNeck([32, 64], 0.35).eval()
    features = [torch.randn(1, 32, 8, 8), torch.randn(1, 64, 4, 4)]
    with torch.no_grad():
        base = fpn(features)
        changed = fpn([features[0], features[1] + 1.0])
        plain_base = fpn.ssdlite(features)
        plain_changed = fpn.ssdlite([features[0], features[1] + 1.0])
    assert not torch.allclose(base[0], changed[0])
    assert torch.equal(plain_base[0], plain_changed[0])


def test_unknown_neck():
    with pytest.raises(ValueError, match="fpn"):
        build_neck("bifpn", [32, 64], 1.0)
