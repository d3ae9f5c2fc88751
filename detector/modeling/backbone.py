"""MobileNetV2 backbone with SSDLite's two taps, and ImageNet weight loading."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

# TF's MobileNet recipe; torchvision's ImageNet weights were trained with eps 1e-5 (see bn_eps).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03
# Block 14 is the first inverted residual at stride 32; its 1x1 expansion still runs at stride 16.
_TAP_BLOCK = 14


class MobileNetV2Backbone(nn.Module):
    """torchvision's MobileNetV2 ``features`` with two outputs.

    Taps (at 320x320 input, width 1.0):
    - ``C4``: the expansion 1x1 conv (+BN+ReLU6) of block 14, ``[B, 576, 20, 20]`` (stride 16);
    - ``C5``: the final 1x1 conv, ``[B, 1280, 10, 10]`` (stride 32).

    Parameter names equal torchvision's (``features.*``), so its state dicts load unchanged.
    """

    def __init__(self, width_mult: float = 1.0, bn_eps: float = BN_EPS, bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        self.features = mobilenet_v2(weights=None, width_mult=width_mult, norm_layer=norm_layer).features
        self.width_mult = width_mult

    def forward(self, images: Tensor) -> list[Tensor]:
        """``images`` ``[B, 3, H, W]`` -> ``[C4, C5]`` feature maps."""
        x = self.features[:_TAP_BLOCK](images)
        block = self.features[_TAP_BLOCK].conv  # no residual: the block has stride 2
        c4 = block[0](x)
        x = block[1:](c4)
        c5 = self.features[_TAP_BLOCK + 1 :](x)
        return [c4, c5]


def _features_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keep the ``features.*`` entries of a torchvision-layout state dict, whatever prefix they carry
    (``features.``, ``backbone.features.``, ``model.backbone.features.`` ...)."""
    features = {}
    for key, value in state_dict.items():
        if key.startswith("features."):
            features[key] = value
        elif ".features." in key:
            features[key[key.index(".features.") + 1 :]] = value
    return features


def imagenet_weights_path(weights: MobileNet_V2_Weights = MobileNet_V2_Weights.IMAGENET1K_V1) -> Path:
    """Where torchvision's download cache keeps ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_backbone_weights(backbone: MobileNetV2Backbone, source: str) -> list[str]:
    """Load ``source`` into ``backbone``: ``"imagenet"`` (torchvision's ``MobileNet_V2_Weights``) or
    a path to a state dict (torchvision's layout, a detector or a classifier checkpoint).

    Returns:
        The names of the loaded tensors.
    """
    if source == "imagenet":
        if backbone.width_mult != 1.0:
            raise ValueError(
                f"torchvision publishes ImageNet weights for width_mult 1.0 only, not {backbone.width_mult}; "
                "pass a path to your own weights or pretrained_backbone='none'"
            )
        weights = MobileNet_V2_Weights.IMAGENET1K_V1
        cached = imagenet_weights_path(weights)
        if cached.is_file():
            state = torch.load(cached, map_location="cpu", weights_only=True)
        else:
            try:
                state = weights.get_state_dict(progress=True)
            except Exception as error:  # urllib raises several types when offline
                raise RuntimeError(
                    f"could not download torchvision's MobileNetV2 ImageNet weights from {weights.url} ({error}). "
                    f"Offline, put that file at {cached} (or pass its path as pretrained_backbone)."
                ) from error
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_backbone: no such file {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        # A classifier checkpoint may hold an EMA copy too; the plain weights are the trunk.
        state = {k: v for k, v in state.items() if not k.startswith("ema")}
    features = _features_state_dict(state)
    if not features:
        raise ValueError(f"{source}: no MobileNetV2 'features.*' weights found in this state dict")
    backbone.load_state_dict(features, strict=True)
    return sorted(features)
