"""What the int8 tests share: the quantisation step of each raw output, the int8 error measured in
those steps, and broken variants of a correct int8 file, so each test can show that it fails on them.

Why steps and not detection counts: the briefly trained test model puts most of its detections just
above the score threshold, so counting detections that survive quantisation measures how many scores
sit near a cut-off, which moves with each CPU's kernels and each runtime release (issue #30). The
mean error of the raw outputs, in units of their own quantisation step (the scale of the
DequantizeLinear that produces them), does not: a correct int8 export lands a few steps from fp32,
a broken one tens or hundreds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Measured on the test model (docs/benchmarks.md, "int8 tests"): a correct export 2.1 (cls) and 4.5 (box)
# steps on ONNX Runtime and OpenVINO alike; a breakage of one head conv 13 to 21 steps on the output it
# feeds, of every conv 41 to 85.
MAX_MEAN_ERROR_STEPS = 8.0


def output_steps(path: str | Path) -> list[float]:
    """The quantisation step of each graph output of an int8 QDQ file, in output order: the scale of
    the ``DequantizeLinear`` that produces it."""
    proto = onnx.load(str(path))
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    steps = []
    for output in proto.graph.output:
        node = producers[output.name]
        while node.op_type != "DequantizeLinear":  # through any Reshape / Concat the quantiser kept float
            node = producers[node.input[0]]
        steps.append(float(inits[node.input[1]]))
    return steps


def mean_error_in_steps(int8: list[np.ndarray], fp32: list[np.ndarray], steps: list[float]) -> list[float]:
    """Mean |int8 - fp32| of each output, over its quantisation step."""
    return [float(np.abs(a - b).mean()) / step for a, b, step in zip(int8, fp32, steps)]


def _weight_dequantizers(proto: onnx.ModelProto, layers: str) -> list[onnx.NodeProto]:
    """The weight ``DequantizeLinear`` nodes of the convs that a breakage hits: ``"all"`` of them (a
    systematic exporter bug) or ``"one"``, the first class head's 1x1 conv (the level with most anchors)."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    if layers == "one":
        convs = [n for n in convs if n.name.startswith("/head/cls_heads.0/") and n.name.endswith(".1/Conv")]
    if not convs:
        raise AssertionError(f"no conv to break ({layers})")
    return [producers[conv.input[1]] for conv in convs]


def _arrays(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def _replace_initializer(proto: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    for i, tensor in enumerate(proto.graph.initializer):
        if tensor.name == name:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, name))
            return
    raise KeyError(name)


def wrong_scale(proto: onnx.ModelProto, layers: str) -> None:
    """Weight scales doubled (a scale computed for the wrong range, say)."""
    arrays = _arrays(proto)
    for dq in _weight_dequantizers(proto, layers):
        _replace_initializer(proto, dq.input[1], arrays[dq.input[1]] * 2)


def shuffled_channels(proto: onnx.ModelProto, layers: str) -> None:
    """int8 weights with their output channels rolled by one, the per-channel scales left in place."""
    arrays = _arrays(proto)
    for dq in _weight_dequantizers(proto, layers):
        _replace_initializer(proto, dq.input[0], np.roll(arrays[dq.input[0]], 1, axis=0))


def dropped_dequantize(proto: onnx.ModelProto, layers: str) -> None:
    """Weight ``DequantizeLinear`` nodes replaced by a plain cast: the conv reads the int8 codes as if
    they were the weights."""
    for dq in _weight_dequantizers(proto, layers):
        index = list(proto.graph.node).index(dq)
        cast = helper.make_node("Cast", [dq.input[0]], list(dq.output), name=dq.name + "_dropped",
                                to=TensorProto.FLOAT)
        proto.graph.node.remove(dq)
        proto.graph.node.insert(index, cast)


BREAKAGES = {"wrong_scale": wrong_scale, "shuffled_channels": shuffled_channels, "dropped_dequantize": dropped_dequantize}


def broken_copy(path: str | Path, breakage: str, layers: str, output: str | Path) -> Path:
    """A copy of the int8 file ``path`` with a breakage of :data:`BREAKAGES` applied to ``"all"`` convs
    or ``"one"``, metadata kept."""
    proto = onnx.load(str(path))
    BREAKAGES[breakage](proto, layers)
    onnx.save(proto, str(output))
    return Path(output)
