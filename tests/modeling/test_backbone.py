"""MobileNetV2 backbone: taps, torchvision weight loading, ImageNet weights offline."""
import urllib.error
from functools import partial

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from detector import build_model
from detector.errors import WeightsUnavailableError
from detector.modeling.backbone import MobileNetV2Backbone, imagenet_weights_path, load_backbone_weights

TF_NORM = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine terms, so eps and buffer loading matter."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.02 + 1e-4)  # small: eps dominates
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def torchvision_taps(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """C4 = features[14].conv[0] output, C5 = features[18] output, by forward hooks."""
    taps = {}
    hooks = [
        model.features[14].conv[0].register_forward_hook(lambda m, i, o: taps.__setitem__("c4", o)),
        model.features[18].register_forward_hook(lambda m, i, o: taps.__setitem__("c5", o)),
    ]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return [taps["c4"], taps["c5"]]


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def tv_models():
    """Randomly initialised torchvision models, TF BatchNorm and torchvision's default."""
    torch.manual_seed(0)
    tf_bn = mobilenet_v2(weights=None, norm_layer=TF_NORM)
    randomise_bn(tf_bn, 1)
    default_bn = mobilenet_v2(weights=None)
    randomise_bn(default_bn, 2)
    return tf_bn.eval(), default_bn.eval()


def run(backbone, images):
    with torch.no_grad():
        return backbone.eval()(images)


def test_taps_shapes_width_1():
    c4, c5 = run(MobileNetV2Backbone(1.0), torch.zeros(1, 3, 128, 128))
    assert c4.shape == (1, 576, 8, 8)  # stride 16
    assert c5.shape == (1, 1280, 4, 4)  # stride 32


def test_default_batchnorm_is_tf_recipe():
    bns = [m for m in MobileNetV2Backbone(0.35).modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    assert all(m.eps == 1e-5 for m in MobileNetV2Backbone(0.35, bn_eps=1e-5).modules() if isinstance(m, nn.BatchNorm2d))
    assert all(isinstance(m, nn.ReLU6) for m in MobileNetV2Backbone(0.35).modules() if isinstance(m, (nn.ReLU, nn.ReLU6)))


@pytest.mark.parametrize("layout", ["plain", "prefixed", "nested"])
def test_torchvision_state_dict_gives_identical_taps(tmp_path, images, tv_models, layout):
    tv, _ = tv_models
    state = tv.state_dict()
    if layout == "prefixed":
        state = {"backbone." + k: v for k, v in state.items()}
    elif layout == "nested":
        state = {"state_dict": {"model.backbone." + k: v for k, v in state.items()}, "epoch": 3}
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(state, path)
    backbone = MobileNetV2Backbone(1.0)
    loaded = load_backbone_weights(backbone, str(path))
    assert len(loaded) == len([k for k in tv.state_dict() if k.startswith("features.")])
    ours = run(backbone, images)
    expected = torchvision_taps(tv, images)
    assert [t.shape[1] for t in ours] == [576, 1280]
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_plain_weights_preferred_over_an_ema_copy(tmp_path, tv_models):
    tv, other = tv_models
    state = {"model." + k: v for k, v in tv.state_dict().items()}
    state.update({"ema_model.module." + k: v for k, v in other.state_dict().items()})
    torch.save({"state_dict": state}, tmp_path / "classifier.ckpt")
    backbone = MobileNetV2Backbone(1.0)
    load_backbone_weights(backbone, str(tmp_path / "classifier.ckpt"))
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, tv.state_dict()[key]), key


def test_bn_eps_1e5_matches_default_torchvision(tmp_path, images, tv_models):
    tf_bn, default_bn = tv_models
    path = tmp_path / "default.pth"
    torch.save(default_bn.state_dict(), path)
    backbone = MobileNetV2Backbone(1.0, bn_eps=1e-5)
    load_backbone_weights(backbone, str(path))
    for a, b in zip(run(backbone, images), torchvision_taps(default_bn, images)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # The check is meaningful: the same weights under eps 1e-3 give different features.
    other = MobileNetV2Backbone(1.0)
    load_backbone_weights(other, str(path))
    assert (run(other, images)[1] - torchvision_taps(default_bn, images)[1]).abs().max() > 1e-3


def test_build_model_loads_backbone_path(tmp_path, tv_models):
    tv, _ = tv_models
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    model = build_model(num_classes=3, image_size=128, pretrained_backbone=str(path))
    for key, value in tv.state_dict().items():
        if key.startswith("features."):
            assert torch.equal(model.backbone.state_dict()[key], value), key


def test_imagenet_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    expected = tmp_path / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert imagenet_weights_path() == expected
    with pytest.raises(WeightsUnavailableError) as info:
        build_model(num_classes=3, image_size=128, pretrained_backbone="imagenet")
    assert str(expected) in str(info.value)
    # ... and what to do without the file: from scratch, or from the zoo's pretrained detector (issue #39).
    assert "--model.pretrained_backbone none" in str(info.value) and "configs/finetune_zoo_tf.yaml" in str(info.value)
    assert not expected.exists()


def test_imagenet_uses_the_file_put_where_the_error_said(tmp_path, monkeypatch, images, tv_models):
    _, default_bn = tv_models
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("must not download"))
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(default_bn.state_dict(), path)
    backbone = MobileNetV2Backbone(1.0, bn_eps=1e-5)
    load_backbone_weights(backbone, "imagenet")
    for a, b in zip(run(backbone, images), torchvision_taps(default_bn, images)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_imagenet_with_other_width_is_refused():
    with pytest.raises(ValueError, match="width_mult"):
        build_model(num_classes=3, width_mult=0.5, image_size=128, pretrained_backbone="imagenet")


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.pth"):
        load_backbone_weights(MobileNetV2Backbone(0.35), str(tmp_path / "no_such.pth"))
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="features"):
        load_backbone_weights(MobileNetV2Backbone(0.35), str(path))


@pytest.mark.parametrize("taps, block, module, channels", [
    ("expansion", 7, "conv.0", 192),  # block 7's expansion 1x1, 32 * 6 channels, still at stride 8
    ("blocks", 6, "", 32),  # block 6's output
])
def test_stride8_tap_is_torchvision_layer_output(tmp_path, images, tv_models, taps, block, module, channels):
    """C3 is the named torchvision layer's output (a forward hook), and C4, C5 do not change."""
    tv, _ = tv_models
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    with_c3, without = MobileNetV2Backbone(1.0, taps=taps, stride8=True), MobileNetV2Backbone(1.0, taps=taps)
    for backbone in (with_c3, without):
        load_backbone_weights(backbone, str(tmp_path / "tv.pth"))
    hooked = {}
    layer = tv.features[block].get_submodule(module) if module else tv.features[block]
    hook = layer.register_forward_hook(lambda m, i, o: hooked.__setitem__("c3", o))
    with torch.no_grad():
        tv(images)
    hook.remove()
    c3, c4, c5 = run(with_c3, images)
    assert c3.shape == (2, channels, 96 // 8, 96 // 8)
    torch.testing.assert_close(c3, hooked["c3"], atol=1e-6, rtol=0)
    for a, b in zip((c4, c5), run(without, images)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_stride8_level_is_a_mobilenet_v2_option():
    with pytest.raises(ValueError, match="stride8_level"):
        build_model(num_classes=3, image_size=128, backbone="mobilenet_v3_large", stride8_level=True)
