"""torchvision's ``ssdlite320_mobilenet_v3_large`` (COCO_V1 weights) as a detector of this package.

The architecture is ours with options: MobileNetV3-Large backbone with the reduced tail, the same
SSDLite extra layers and depthwise heads, six boxes per location on every level in torchvision's
order with their sizes clipped to the image, [-1, 1] normalisation, and torchvision's
post-processing settings. Only the state dict's names change; every tensor is copied as it is.
"""
from __future__ import annotations

import re
from typing import Any

from torch import Tensor

from detector.labels import LabelMap
from detector.modeling.ssdlite import PRESETS

PRESET = "ssdlite320_mobilenet_v3_large"

# build_model's recipe: the preset that rebuilds torchvision's network and post-processing, 91 classes.
CONFIG: dict[str, Any] = {"preset": PRESET, **PRESETS[PRESET], "num_classes": 91}


def label_map() -> LabelMap:
    """Labels 1..90 are COCO's category ids 1..90 themselves (torchvision keeps the gaps as "N/A")."""
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

    names = SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"][1:]  # [0] is background
    return LabelMap(category_ids=tuple(range(1, len(names) + 1)), names=tuple(names))


_HEADS = {"classification_head": "cls_heads", "regression_head": "box_heads"}


def convert_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's ``SSD`` state dict -> ``SSDLite``'s (``build_model(**CONFIG)``), tensors unchanged.

    torchvision splits the backbone at C4's expansion into ``features.0`` (blocks ``0..c4-1`` and the
    expansion ``c4.block[0]``) and ``features.1`` (``c4.block[1:]``, kept under its own indices, then
    the later blocks); ours keeps torchvision's plain ``features.<block>`` names.
    """
    first = [int(m.group(1)) for k in state if (m := re.match(r"backbone\.features\.0\.(\d+)\.", k))]
    if not first:
        raise ValueError("not a torchvision SSDLite-MobileNet state dict: no 'backbone.features.0.*' entries")
    c4 = max(first)  # the last entry of features.0 is C4's expansion
    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        if m := re.match(r"backbone\.features\.0\.(\d+)\.(.+)", key):
            block, rest = int(m.group(1)), m.group(2)
            new = f"backbone.features.{c4}.block.0.{rest}" if block == c4 else f"backbone.features.{block}.{rest}"
        elif m := re.match(r"backbone\.features\.1\.0\.(\d+)\.(.+)", key):
            new = f"backbone.features.{c4}.block.{m.group(1)}.{m.group(2)}"
        elif m := re.match(r"backbone\.features\.1\.(\d+)\.(.+)", key):
            new = f"backbone.features.{c4 + int(m.group(1))}.{m.group(2)}"
        elif key.startswith("backbone.extra."):
            new = "neck.extra." + key[len("backbone.extra."):]
        elif m := re.match(r"head\.(classification_head|regression_head)\.module_list\.(.+)", key):
            new = f"head.{_HEADS[m.group(1)]}.{m.group(2)}"
        elif key == "anchor_generator" or key.startswith("transform."):
            continue
        else:
            raise ValueError(f"unexpected entry {key!r} in a torchvision SSDLite state dict")
        converted[new] = value
    return converted
