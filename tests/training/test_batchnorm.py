"""Folded BatchNorm given real statistics (detector/training/batchnorm.py): eval mode computes what it
did, training mode on the measured batch computes the same, other layers are left alone; and a fit from
a backbone with folded BatchNorm does it before the first step."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from detector.modeling.ssdlite import build_model
from detector.training.batchnorm import identity_batchnorms, unfold_batchnorm
from detector.training.cli import main

from training_helpers import tiny_args


def folded_block(channels: int = 6) -> nn.Sequential:
    """conv -> BN (identity statistics, the folded bias as bias, as TFLite's converter leaves it) -> ReLU6
    -> conv -> BN (fresh: variance 1, not an identity)."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels, eps=1e-3),
                          nn.ReLU6(), nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
    folded = block[1]
    folded.running_var.fill_(1 - folded.eps)
    with torch.no_grad():
        folded.bias.copy_(torch.randn(channels) * 0.1)
    return block


def test_only_identity_statistics_are_found() -> None:
    block = folded_block()
    assert identity_batchnorms(block) == [block[1]]


def test_eval_unchanged_and_training_mode_on_the_batch_equal() -> None:
    block = folded_block().eval()
    images = torch.rand(4, 3, 10, 10) * 2 - 1
    with torch.no_grad():
        before = block(images)
        conv_out = block[0](images)  # what the first BatchNorm sees: its statistics, by hand
    assert unfold_batchnorm(block, [images[:2], images[2:]]) == 1
    torch.testing.assert_close(block[1].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(block[1].running_var, conv_out.var(dim=(0, 2, 3), unbiased=False), atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(block(images), before, atol=1e-5, rtol=1e-5)  # eval: the same function
        # Training mode normalises by the batch's statistics, which are now the layer's own: the same
        # function as eval on that batch (before, it divided each channel by its real spread).
        expected = block[1](conv_out)
        torch.testing.assert_close(block[1].train()(conv_out), expected, atol=1e-5, rtol=1e-5)
    fresh = block[4]
    assert torch.all(fresh.running_var == 1) and torch.all(fresh.running_mean == 0)  # left alone
    assert unfold_batchnorm(block, [images]) == 0  # nothing identity is left: the batches are not read


def folded_backbone_file(path: Path) -> Path:
    """A width-0.35 MobileNetV2 trunk with random BatchNorm folded into its convs (identity statistics
    left behind), saved as a state dict of ``features.*``, as a TFLite conversion gives it."""
    torch.manual_seed(1)
    features = build_model("ssdlite_mobilenetv2", num_classes=3, width_mult=0.35).backbone.features
    state = {}
    modules = dict(features.named_modules())
    for name, module in features.named_modules():
        if not isinstance(module, nn.BatchNorm2d):
            continue
        parent, index = name.rsplit(".", 1)
        conv = modules[f"{parent}.{int(index) - 1}"]
        gamma, beta = torch.rand(module.num_features) + 0.5, torch.randn(module.num_features) * 0.1
        mean, var = torch.randn(module.num_features) * 0.2, torch.rand(module.num_features) + 0.5
        scale = gamma / torch.sqrt(var + module.eps)
        state[f"{parent}.{int(index) - 1}.weight"] = conv.weight.detach() * scale.view(-1, 1, 1, 1)
        state[f"{name}.weight"] = torch.ones(module.num_features)
        state[f"{name}.bias"] = beta - mean * scale
        state[f"{name}.running_mean"] = torch.zeros(module.num_features)
        state[f"{name}.running_var"] = torch.full((module.num_features,), 1 - module.eps)
        state[f"{name}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    torch.save({f"features.{k}": v for k, v in state.items()}, path)
    return path


def test_a_fit_from_folded_batchnorm_measures_statistics_first(tiny_coco: Path, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    backbone = folded_backbone_file(tmp_path / "folded.pt")
    run = tmp_path / "run"
    caplog.set_level(logging.INFO)
    main(["fit", *tiny_args(tiny_coco, run, **{"model.pretrained_backbone": backbone, "trainer.max_epochs": None,
                                                 "trainer.max_steps": 1, "model.ema_decay": 0.99})])
    assert "BatchNorm layers held folded weights" in caplog.text and "measured on 12 training images" in caplog.text
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    variances = [v for k, v in state.items() if k.startswith("model.backbone.") and k.endswith("running_var")]
    assert variances and not any(torch.allclose(v + 1e-3, torch.ones_like(v), rtol=0, atol=1e-6) for v in variances)
