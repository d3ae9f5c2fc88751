"""TFLite MobileNetV2 ImageNet classifiers as :class:`detector.pretrain.model.MobileNetV2Classifier`.

Two published files convert: TF-Slim's ``mobilenet_v2_1.0_224_quant.tflite`` (uint8, one scale per
tensor) and the Keras ``tf2_mobilenet_v2_1.0_224_ptq.tflite`` (int8, one scale per output channel).
The network is ours with the classifier preset ``mobilenet_v2_tf`` (:data:`CONFIG`): TF's SAME padding
of strided convs, ReLU6, 1001 outputs with "background" first. The conversion

- dequantises every weight and bias with its own scale and zero point (``(q - zero_point) * scale``,
  per tensor or per channel along the tensor's quantised dimension);
- places BatchNorm, which TFLite has folded into the convolutions, as an identity: weight 1, running
  mean 0, running variance ``1 - eps`` (so ``sqrt(var + eps) == 1``), the folded bias as its bias.
  The layout stays torchvision's, so the trunk loads into the detector's backbone as it is;
- changes layouts: TFLite's ``[out, kh, kw, in]`` conv and ``[1, kh, kw, C]`` depthwise kernels become
  PyTorch's ``[out, in, kh, kw]`` and ``[C, 1, kh, kw]``.

Each convolution is checked against the module it fills (kind, kernel, stride, padding, fused
activation) and every tensor is placed exactly once (``load_state_dict(strict=True)``). The file is
read as data with the ``tflite`` package (the flatbuffer schema's generated reader): nothing of it runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detector.modeling.backbone import BN_EPS, BN_MOMENTUM, MobileNetV2Backbone
from detector.modeling.padding import use_tf_same_padding

__all__ = ["CONFIG", "TFLiteOperator", "TFLiteTensor", "conv_targets", "input_normalization", "read_operators",
           "read_state_dict"]

# The converted classifier's config: detector.pretrain.model.MobileNetV2Classifier(**CONFIG) is TF's
# MobileNetV2 (its preset "mobilenet_v2_tf": TF's SAME padding), with 1001 outputs.
CONFIG: dict[str, Any] = {"num_classes": 1001, "width_mult": 1.0, "dropout": 0.2, "bn_momentum": BN_MOMENTUM,
                          "preset": "mobilenet_v2_tf", "padding": "tf_same", "pretrained": "none"}

_TYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 9: np.int8, 4: np.int64}  # tflite.TensorType
_PADDING = {0: "SAME", 1: "VALID"}  # tflite.Padding
_ACTIVATION = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}  # tflite.ActivationFunctionType


@dataclass
class TFLiteTensor:
    """One tensor of the graph: its data (constants only) and quantisation (``scale``, ``zero_point``
    per tensor or per channel along ``axis``; ``None`` when the tensor is float)."""

    name: str
    shape: tuple[int, ...]
    dtype: type | None  # numpy's type of the stored values (np.uint8, np.int8, np.int32, np.float32)
    data: np.ndarray | None
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    axis: int

    def dequantized(self) -> np.ndarray:
        """The constant as float32: ``(q - zero_point) * scale``, broadcast along ``axis``."""
        if self.data is None:
            raise ValueError(f"tensor {self.name!r} holds no constant data")
        if self.scale is None or self.scale.size == 0:
            return self.data.astype(np.float32)
        view = [1] * self.data.ndim
        if self.scale.size > 1:
            view[self.axis] = self.scale.size
        scale = self.scale.astype(np.float64).reshape(view)
        zero_point = self.zero_point.astype(np.float64).reshape(view) if self.zero_point is not None else 0.0
        return ((self.data.astype(np.float64) - zero_point) * scale).astype(np.float32)


@dataclass
class TFLiteOperator:
    """One operator: its builtin name, its tensors, and the options this converter checks."""

    kind: str
    inputs: list[TFLiteTensor | None]
    outputs: list[TFLiteTensor]
    options: dict[str, Any]


def _tensor(model: Any, graph: Any, index: int) -> TFLiteTensor:
    tensor = graph.Tensors(index)
    dtype = _TYPES.get(tensor.Type())
    buffer = model.Buffers(tensor.Buffer())
    data = None
    if dtype is not None and buffer is not None and buffer.DataLength() > 0:
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy())
        data = np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype).reshape(shape).copy()
    quantization = tensor.Quantization()
    scale = zero_point = None
    axis = 0
    if quantization is not None and quantization.ScaleLength() > 0:
        scale = quantization.ScaleAsNumpy().copy()
        zero_point = quantization.ZeroPointAsNumpy().copy()
        axis = int(quantization.QuantizedDimension())
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    return TFLiteTensor(tensor.Name().decode(), shape, dtype, data, scale, zero_point, axis)


def _options(op: Any, kind: str) -> dict[str, Any]:
    import tflite

    table = op.BuiltinOptions()
    if table is None or kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return {}
    options = tflite.Conv2DOptions() if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions()
    options.Init(table.Bytes, table.Pos)
    return {
        "padding": _PADDING.get(options.Padding(), str(options.Padding())),
        "stride": (int(options.StrideH()), int(options.StrideW())),
        "dilation": (int(options.DilationHFactor()), int(options.DilationWFactor())),
        "activation": _ACTIVATION.get(options.FusedActivationFunction(), str(options.FusedActivationFunction())),
    }


def read_operators(data: bytes) -> tuple[list[TFLiteOperator], TFLiteTensor]:
    """The first subgraph's operators in execution order, and its input tensor.

    Raises:
        ValueError: ``data`` is not a TFLite flatbuffer.
    """
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no 'TFL3' identifier)")
    names = {value: key for key, value in vars(BuiltinOperator).items() if not key.startswith("_")}
    model = tflite.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    operators = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        # Files since TF 2.4 store codes above 127 in BuiltinCode and keep a capped copy in the deprecated field.
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")
        inputs = [_tensor(model, graph, int(j)) if j >= 0 else None for j in op.InputsAsNumpy()]
        outputs = [_tensor(model, graph, int(j)) for j in op.OutputsAsNumpy()]
        operators.append(TFLiteOperator(kind, inputs, outputs, _options(op, kind)))
    return operators, _tensor(model, graph, int(graph.Inputs(0)))


def input_normalization(input_tensor: TFLiteTensor) -> tuple[list[float], list[float]]:
    """``mean``, ``std`` of 0..1 RGB that give the float the quantised input stands for:
    ``scale * (q - zero_point) == (q / 255 - mean) / std``, so ``mean = zp / 255``, ``std = 1 / (255 scale)``."""
    if input_tensor.scale is None or input_tensor.scale.size != 1:
        raise ValueError(f"input {input_tensor.name!r}: expected one scale and zero point (a quantised image)")
    scale, zero_point = float(input_tensor.scale[0]), float(input_tensor.zero_point[0])
    return [zero_point / 255.0] * 3, [1.0 / (255.0 * scale)] * 3


def conv_targets(model: nn.Module) -> list[tuple[str, nn.Conv2d, str, bool]]:
    """Each conv of the classifier's trunk in execution order: its name, module, the name of the
    BatchNorm after it, and whether a ReLU6 follows that BatchNorm (torchvision's ``Sequential``s
    put them at the next two indices)."""
    modules = dict(model.named_modules())
    targets = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        parent, index = name.rsplit(".", 1)
        norm_name = f"{parent}.{int(index) + 1}"
        if not isinstance(modules.get(norm_name), nn.BatchNorm2d):
            raise ValueError(f"{name}: no BatchNorm after this conv")
        relu6 = isinstance(modules.get(f"{parent}.{int(index) + 2}"), nn.ReLU6)
        targets.append((name, module, norm_name, relu6))
    return targets


def _check_conv(op: TFLiteOperator, number: int, name: str, conv: nn.Conv2d, relu6: bool) -> None:
    depthwise = conv.groups > 1
    expected_kind = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    options = op.options
    problems = []
    if op.kind != expected_kind:
        problems.append(f"is {op.kind}, expected {expected_kind}")
    elif tuple(options["stride"]) != tuple(conv.stride):
        problems.append(f"stride {options['stride']}, the network's {conv.stride}")
    elif options["dilation"] != (1, 1):
        problems.append(f"dilation {options['dilation']}")
    elif options["activation"] != ("RELU6" if relu6 else "NONE"):
        problems.append(f"activation {options['activation']}, the network's {'RELU6' if relu6 else 'none'}")
    # SAME: strided convs are padded as TF does (the preset's tf_same); stride-1 3x3 convs pad 1 on
    # every side in both frameworks. 1x1 convs pad nothing either way.
    elif max(conv.kernel_size) > 1 and options["padding"] != "SAME":
        problems.append(f"padding {options['padding']}, the network pads as TF's SAME")
    if problems:
        raise ValueError(f"operator {number} ({op.outputs[0].name}) does not fit {name}: {'; '.join(problems)}")


def _kernel(op: TFLiteOperator, conv: nn.Conv2d) -> Tensor:
    weights = op.inputs[1].dequantized()
    # CONV_2D [out, kh, kw, in] -> [out, in, kh, kw]; DEPTHWISE_CONV_2D [1, kh, kw, C] -> [C, 1, kh, kw].
    array = weights.transpose(0, 3, 1, 2) if op.kind == "CONV_2D" else weights.transpose(3, 0, 1, 2)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.shape != conv.weight.shape:
        raise ValueError(f"{op.outputs[0].name}: kernel {tuple(tensor.shape)}, the network's {tuple(conv.weight.shape)}")
    return tensor


def _bias(op: TFLiteOperator, channels: int) -> Tensor:
    if len(op.inputs) < 3 or op.inputs[2] is None:
        return torch.zeros(channels)
    bias = torch.from_numpy(op.inputs[2].dequantized().reshape(-1))
    if bias.numel() != channels:
        raise ValueError(f"{op.outputs[0].name}: {bias.numel()} biases for {channels} channels")
    return bias


def convert(operators: list[TFLiteOperator], model: nn.Module) -> dict[str, Tensor]:
    """``model``'s state dict (a ``MobileNetV2Classifier`` of preset ``mobilenet_v2_tf``) from a
    MobileNetV2's operators. Raises ``ValueError`` naming the operator that does not fit."""
    convs = [op for op in operators if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    targets = conv_targets(model.trunk.features)
    head = model.classifier[1]
    if len(convs) != len(targets) + 1:
        raise ValueError(f"{len(convs)} convolutions in the file; a MobileNetV2 classifier has {len(targets) + 1}")
    adds = sum(op.kind == "ADD" for op in operators)
    residuals = sum(bool(getattr(block, "use_res_connect", False)) for block in model.trunk.features)
    if adds != residuals:
        raise ValueError(f"{adds} ADD operators in the file; the network has {residuals} residual connections")
    state: dict[str, Tensor] = {}

    def place(key: str, value: Tensor) -> None:
        if key in state:
            raise ValueError(f"{key} placed twice")
        state[key] = value.to(torch.float32)

    for number, (op, (name, conv, norm_name, relu6)) in enumerate(zip(convs, targets)):
        _check_conv(op, number, name, conv, relu6)
        norm = dict(model.trunk.features.named_modules())[norm_name]
        channels = conv.out_channels
        place(f"trunk.features.{name}.weight", _kernel(op, conv))
        # BatchNorm as identity: TFLite folded it into the kernel and bias.
        place(f"trunk.features.{norm_name}.weight", torch.ones(channels))
        place(f"trunk.features.{norm_name}.bias", _bias(op, channels))
        place(f"trunk.features.{norm_name}.running_mean", torch.zeros(channels))
        place(f"trunk.features.{norm_name}.running_var", torch.full((channels,), 1.0 - norm.eps))
        state[f"trunk.features.{norm_name}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    logits = convs[-1]
    weights = logits.inputs[1].dequantized()  # [classes, 1, 1, channels]
    if logits.kind != "CONV_2D" or weights.shape[1:3] != (1, 1):
        raise ValueError(f"the last operator ({logits.outputs[0].name}) is not a 1x1 logits conv")
    place("classifier.1.weight", torch.from_numpy(np.ascontiguousarray(weights[:, 0, 0, :])))
    place("classifier.1.bias", _bias(logits, head.out_features))
    if state["classifier.1.weight"].shape != head.weight.shape:
        raise ValueError(f"logits {tuple(state['classifier.1.weight'].shape)}, the network's {tuple(head.weight.shape)}")
    return state


def _network() -> nn.Module:
    """The layout of ``MobileNetV2Classifier(**CONFIG)`` (``trunk.features.*``, ``classifier.1.*``), built
    from the detector's own layers: the zoo sits below :mod:`detector.pretrain` and does not import it.
    ``tests/zoo/test_tflite_mobilenet_v2.py`` loads the result into the real classifier, strictly."""
    network = nn.Module()
    network.trunk = use_tf_same_padding(MobileNetV2Backbone(width_mult=1.0, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM))
    network.classifier = nn.Sequential(nn.Dropout(p=CONFIG["dropout"]), nn.Linear(1280, CONFIG["num_classes"]))
    return network


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A TFLite MobileNetV2 1.0 ImageNet classifier file -> (``MobileNetV2Classifier`` state dict,
    ``{"mean", "std", "image_size"}`` of its input). The state dict loads with ``strict=True`` into
    ``MobileNetV2Classifier(**CONFIG)``; ``ValueError`` when the file is not such a network."""
    operators, input_tensor = read_operators(Path(path).read_bytes())
    model = _network()
    state = convert(operators, model)
    model.load_state_dict(state, strict=True)  # every tensor of the network placed, none left over
    mean, std = input_normalization(input_tensor)
    return state, {"mean": mean, "std": std, "image_size": int(input_tensor.shape[1])}
