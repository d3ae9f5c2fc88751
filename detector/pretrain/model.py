"""MobileNetV2 as an image classifier over the detector's own backbone, and its checkpoints.

The trunk is :class:`detector.modeling.backbone.MobileNetV2Backbone` with the detector's BatchNorm settings,
so a trained classifier's ``trunk.features.*`` load into the detector unchanged
(``build_model(..., pretrained_backbone=CKPT)``) and compute exactly the same maps.

Checkpoint layout (Lightning's ``*.ckpt``, loadable with ``torch.load(weights_only=True)``)::

    {"state_dict": {"model.trunk.features.<...>": Tensor, "model.classifier.1.weight": Tensor, ...,
                    ["ema_model.module.<...>": Tensor, ...]},
     "classifier": {"config": {"num_classes", "width_mult", "dropout", "bn_momentum", "pretrained": "none"},
                    "class_names": [str, ...], "image_size": int, "mean": [3 floats], "std": [3 floats]},
     ... Lightning's own entries (global_step, optimizer_states, ...)}
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import MobileNet_V2_Weights

from detector.modeling.backbone import BN_EPS, BN_MOMENTUM, MobileNetV2Backbone, imagenet_weights_path, load_backbone_weights
from detector.modeling.padding import use_tf_same_padding
from detector.checkpoint import load_data, model_state_dict, read_checkpoint
from detector.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "CLASSIFIER_KEY",
    "CLASSIFIER_PRESETS",
    "MobileNetV2Classifier",
    "classifier_meta",
    "is_classifier_checkpoint",
    "load_classifier",
]

CLASSIFIER_KEY = "classifier"
# torchvision's MobileNetV2 head is ``classifier = Sequential(Dropout, Linear)``: the same names here
# let torchvision's (and our own) state dicts load the head as well as the trunk.
_HEAD_KEYS = ("classifier.1.weight", "classifier.1.bias")
# Each way a published MobileNetV2 differs from torchvision's is an option of one preset. TF's
# (TF-Slim and Keras, also as TFLite files): SAME padding of strided convs, which pads 0 before and 1
# after on even sides where PyTorch pads 1 and 1.
CLASSIFIER_PRESETS: dict[str, dict[str, str]] = {
    "mobilenet_v2": {"padding": "symmetric"},
    "mobilenet_v2_tf": {"padding": "tf_same"},
}


class MobileNetV2Classifier(nn.Module):
    """MobileNetV2 image classifier: the detector's backbone, global average pool, dropout, linear.

    Args:
        num_classes: number of output classes (no background class).
        width_mult: MobileNetV2 width multiplier (the detector's ``width_mult`` must match to transfer).
        dropout: dropout before the linear layer (torchvision's 0.2).
        bn_momentum: BatchNorm running-statistics momentum (the detector's 0.03 by default).
        preset: a name of :data:`CLASSIFIER_PRESETS`: ``"mobilenet_v2"`` (torchvision's layers) or
            ``"mobilenet_v2_tf"`` (TF's SAME padding; the TFLite ImageNet models of :mod:`detector.zoo`).
        padding: ``"symmetric"`` or ``"tf_same"``; ``None`` takes the preset's.
        pretrained: starting weights: ``"none"``; ``"imagenet"`` (torchvision's
            ``MobileNet_V2_Weights.IMAGENET1K_V1``; the head too when ``num_classes == 1000``);
            ``"zoo:NAME"`` (a zoo classifier, e.g. TF's ``zoo:mobilenet_v2_1.0_224_imagenet_quant``;
            the head too when ``num_classes == 1001``); or a path to a state dict or checkpoint (the
            trunk, and the head when its shape fits).
    """

    def __init__(
        self,
        num_classes: int,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        pretrained: str = "none",
        bn_momentum: float = BN_MOMENTUM,
        preset: str = "mobilenet_v2",
        padding: str | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if preset not in CLASSIFIER_PRESETS:
            raise ValueError(f"classifier preset must be one of {sorted(CLASSIFIER_PRESETS)}, got {preset!r}")
        padding = padding or CLASSIFIER_PRESETS[preset]["padding"]
        if padding not in ("symmetric", "tf_same"):
            raise ValueError(f"padding must be 'symmetric' or 'tf_same', got {padding!r}")
        # The detector's BN eps (it changes what the layers compute); the momentum only changes how
        # fast the running statistics follow training, so it is free.
        self.trunk = MobileNetV2Backbone(width_mult=width_mult, bn_eps=BN_EPS, bn_momentum=bn_momentum)
        if padding == "tf_same":
            use_tf_same_padding(self.trunk)
        channels = self.trunk.features[-1][0].out_channels  # the last 1x1 conv (1280 at width 1.0)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(channels, num_classes))
        # torchvision's initialisation of the linear layer.
        nn.init.normal_(self.classifier[1].weight, 0, 0.01)
        nn.init.zeros_(self.classifier[1].bias)
        self.num_classes = num_classes
        self.config: dict[str, Any] = {
            "num_classes": int(num_classes),
            "width_mult": float(width_mult),
            "dropout": float(dropout),
            "bn_momentum": float(bn_momentum),
            "preset": preset,
            "padding": padding,
            "pretrained": "none",  # weights saved with the model travel in the checkpoint itself
        }
        self.loaded_head = False
        if pretrained not in (None, "", "none"):
            self.loaded_head = self.load_pretrained(str(pretrained))

    def forward(self, images: Tensor) -> Tensor:
        """``images`` ``[B, 3, H, W]`` normalised -> ``logits`` ``[B, num_classes]``."""
        x = self.pool(self.trunk.features(images))
        return self.classifier(torch.flatten(x, 1))

    def load_pretrained(self, source: str) -> bool:
        """Load the trunk from ``source`` (``"imagenet"``, ``"zoo:NAME"`` or a path), and the head when
        ``source`` has one of the right shape. Returns whether the head was loaded."""
        if source.startswith("zoo:"):
            from detector.zoo import zoo_classifier_checkpoint

            load_backbone_weights(self.trunk, source, padding=self.config["padding"])  # refuses other padding
            state = zoo_classifier_checkpoint(source)["state_dict"]
        elif source == "imagenet":
            load_backbone_weights(self.trunk, source)
            if self.num_classes != 1000:
                return False
            state = _imagenet_state_dict()
        else:
            state = load_data(source)  # first: a file that would run code is refused with a clear error
            load_backbone_weights(self.trunk, source)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
        head = _head_state_dict(state)
        linear = self.classifier[1]
        if len(head) == 2 and head["weight"].shape == linear.weight.shape and head["bias"].shape == linear.bias.shape:
            linear.load_state_dict(head)
            return True
        return False


def _imagenet_state_dict() -> dict[str, Tensor]:
    """torchvision's ImageNet state dict; ``load_backbone_weights`` has just fetched it into the cache."""
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    cached = imagenet_weights_path(weights)
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    return weights.get_state_dict(progress=False)


def _head_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ``classifier.1.{weight,bias}`` entries under any prefix, EMA copies skipped (as the trunk's)."""
    head = {}
    for key, value in state.items():
        if key.startswith("ema"):
            continue
        for name in _HEAD_KEYS:
            if key == name or key.endswith("." + name):
                head[name.rsplit(".", 1)[1]] = value
    return head


# -- checkpoints -------------------------------------------------------------------------------
def classifier_meta(
    model: MobileNetV2Classifier,
    class_names: list[str],
    image_size: int,
    mean: tuple[float, ...] | list[float] = IMAGENET_MEAN,
    std: tuple[float, ...] | list[float] = IMAGENET_STD,
) -> dict[str, Any]:
    """The checkpoint's ``classifier`` entry: plain Python types only, so ``weights_only=True`` loads it."""
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} outputs")
    return {
        "config": dict(model.config),
        "class_names": [str(name) for name in class_names],
        "image_size": int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }


def is_classifier_checkpoint(path: str | PathLike[str]) -> bool:
    """Whether ``path`` is a classifier checkpoint (a torch file with a ``classifier`` entry).

    ``False`` for anything else: detector checkpoints, ONNX files, missing or unreadable files.
    """
    if str(path).startswith("zoo:"):
        from detector.zoo import is_zoo_classifier

        return is_zoo_classifier(path)
    path = Path(path)
    if not path.is_file() or path.suffix.lower() == ".onnx":
        return False
    try:
        # mmap: only the small metadata is read, not every tensor.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(checkpoint, dict) and isinstance(checkpoint.get(CLASSIFIER_KEY), dict)


def load_classifier(
    path: str | PathLike[str], map_location: str | torch.device = "cpu", prefer_ema: bool = True
) -> tuple[MobileNetV2Classifier, dict[str, Any]]:
    """Rebuild a checkpoint's classifier in eval mode (its EMA weights when present) and its
    ``classifier`` metadata (``class_names``, ``image_size``, ``mean``, ``std``, ``config``)."""
    checkpoint = read_checkpoint(path, map_location, kind=CLASSIFIER_KEY)
    meta = checkpoint[CLASSIFIER_KEY]
    model = MobileNetV2Classifier(**dict(meta["config"], pretrained="none"))
    model.load_state_dict(model_state_dict(checkpoint, prefer_ema))
    return model.to(map_location).eval(), meta
