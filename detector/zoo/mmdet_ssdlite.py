"""mmdetection's ``ssdlite_mobilenetv2-scratch_8xb24-600e_coco`` as a detector of this package.

Our own architecture family; its differences are options of our model: MobileNetV2 tapped at the
block outputs (96 and 1280 channels, mmdetection's ``out_indices=(4, 7)``) rather than at block
14's expansion, anchors of fixed pixel sizes on a pixel-stride grid, candidates kept per level
(``nms_pre``) rather than per class, and its score threshold, NMS IoU and detection cap.

Its classifier puts the background last (index 80 of 81); ours puts it first. The conversion moves
that one output channel of each anchor to the front, so our logits are mmdetection's with the
background column moved: softmax, and so every score, is unchanged.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from detector.labels import LabelMap
from detector.modeling.ssdlite import PRESETS

PRESET = "ssdlite_mobilenetv2_mmdet"
NUM_CLASSES = 80
# build_model's recipe: the preset that rebuilds mmdetection's network and post-processing, 80 + 1 classes
# (ImageNet normalisation: its (123.675, 116.28, 103.53) / 255 on RGB).
CONFIG: dict[str, Any] = {"preset": PRESET, **PRESETS[PRESET], "num_classes": NUM_CLASSES + 1}

# torchvision's MobileNetV2 blocks per mmdetection layer (layer1 .. layer7): 1, 2, 3, 4, 3, 3, 1.
_BLOCKS_PER_LAYER = (1, 2, 3, 4, 3, 3, 1)


def label_map() -> LabelMap:
    """mmdetection's 80 classes in COCO's category-id order, with COCO's ids (1..90 with gaps)."""
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

    categories = SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"]  # index == COCO id
    ids = tuple(i for i, name in enumerate(categories) if name not in ("__background__", "N/A"))
    return LabelMap(category_ids=ids, names=tuple(categories[i] for i in ids))


def _block_index(layer: int, index: int) -> int:
    return 1 + sum(_BLOCKS_PER_LAYER[: layer - 1]) + index


def _inverted_residual(block: int, expands: bool, module: str, part: str) -> str:
    """mmdetection's ``{expand,depthwise,linear}_conv.{conv,bn}`` -> torchvision's ``features.<block>.conv``:
    ``[expand (conv, bn)], depthwise (conv, bn), project conv, project bn``."""
    first = 1 if expands else 0  # the depthwise conv's position
    if module == "expand_conv":
        return f"backbone.features.{block}.conv.0.{0 if part == 'conv' else 1}"
    if module == "depthwise_conv":
        return f"backbone.features.{block}.conv.{first}.{0 if part == 'conv' else 1}"
    return f"backbone.features.{block}.conv.{first + 1 if part == 'conv' else first + 2}"


def _backbone_key(key: str) -> str | None:
    if m := re.match(r"backbone\.conv1\.(conv|bn)\.(.+)", key):
        return f"backbone.features.0.{0 if m.group(1) == 'conv' else 1}.{m.group(2)}"
    if m := re.match(r"backbone\.conv2\.(conv|bn)\.(.+)", key):
        return f"backbone.features.18.{0 if m.group(1) == 'conv' else 1}.{m.group(2)}"
    if m := re.match(r"backbone\.layer(\d)\.(\d+)\.(expand_conv|depthwise_conv|linear_conv)\.(conv|bn)\.(.+)", key):
        layer, index, module, part, rest = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4), m.group(5)
        expands = layer != 1  # the first block has expand ratio 1: no expansion conv
        return f"{_inverted_residual(_block_index(layer, index), expands, module, part)}.{rest}"
    return None


def _neck_or_head_key(key: str) -> str | None:
    if m := re.match(r"neck\.extra_layers\.(\d+)\.0\.(conv|bn)\.(.+)", key):
        return f"neck.extra.{m.group(1)}.0.{0 if m.group(2) == 'conv' else 1}.{m.group(3)}"
    if m := re.match(r"neck\.extra_layers\.(\d+)\.1\.(depthwise|pointwise)_conv\.(conv|bn)\.(.+)", key):
        position = 1 if m.group(2) == "depthwise" else 2
        return f"neck.extra.{m.group(1)}.{position}.{0 if m.group(3) == 'conv' else 1}.{m.group(4)}"
    if m := re.match(r"bbox_head\.(cls|reg)_convs\.(\d+)\.0\.(conv|bn)\.(.+)", key):
        head = "cls_heads" if m.group(1) == "cls" else "box_heads"
        return f"head.{head}.{m.group(2)}.0.{0 if m.group(3) == 'conv' else 1}.{m.group(4)}"
    if m := re.match(r"bbox_head\.(cls|reg)_convs\.(\d+)\.1\.(weight|bias)", key):
        head = "cls_heads" if m.group(1) == "cls" else "box_heads"
        return f"head.{head}.{m.group(2)}.1.{m.group(3)}"
    return None


def background_first(tensor: Tensor, num_classes: int = NUM_CLASSES + 1) -> Tensor:
    """Reorder a class conv's output channels (``[A * C, ...]``, per anchor ``C`` classes with the
    background last) so that each anchor's background comes first."""
    grouped = tensor.reshape(-1, num_classes, *tensor.shape[1:])
    return torch.cat((grouped[:, -1:], grouped[:, :-1]), dim=1).reshape(tensor.shape)


def convert_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """mmdetection's ``SingleStageDetector`` state dict -> ``SSDLite``'s (``build_model(**CONFIG)``)."""
    if not any(k.startswith("backbone.layer") for k in state):
        raise ValueError("not an mmdetection SSDLite-MobileNetV2 state dict: no 'backbone.layer*' entries")
    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        new = _backbone_key(key) or _neck_or_head_key(key)
        if new is None:
            raise ValueError(f"unexpected entry {key!r} in an mmdetection SSDLite state dict")
        if re.match(r"head\.cls_heads\.\d+\.1\.", new):
            value = background_first(value)
        converted[new] = value
    return converted
