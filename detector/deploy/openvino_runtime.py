"""OpenVINO (Intel's CPU runtime) backend: the same exported ``.onnx`` files as ONNX Runtime.

OpenVINO reads ONNX directly, the fp32 export and the QDQ int8 one (its low-precision transformations
turn the QuantizeLinear/DequantizeLinear pairs into int8 kernels), so there is no second export
format. The runner is :class:`detector.deploy.onnx_runtime.OnnxRunner` itself: :class:`OpenVinoSession`
gives an OpenVINO compiled model the few methods of ``onnxruntime.InferenceSession`` that runner
calls (``get_inputs``, ``get_outputs``, ``run``), so decoding, NMS, batching and box scaling stay in
one place. The metadata (label map, input size, normalisation) is read from the file's
``metadata_props`` (:func:`detector.deploy.metadata.read_metadata`).

    runner = load_openvino_runner("model.int8.onnx", num_threads=2)
    runner(images, image_sizes=[(720, 1280)])[0]["boxes"]

Compilation settings (:func:`compile_settings`): the ``LATENCY`` performance hint (one stream, as a
single camera or photo app runs), ``INFERENCE_NUM_THREADS`` when given, and float32 inference
precision: on CPUs with bf16 units OpenVINO would otherwise run the float parts in bf16 and change
the detections; the int8 file still runs its int8 kernels.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from detector.deploy.metadata import OnnxModelInfo, read_metadata
from detector.deploy.onnx_runtime import OnnxRunner

__all__ = ["OpenVinoSession", "compile_model", "compile_settings", "load_openvino_runner", "open_openvino_session",
           "shared_core"]


@dataclass(frozen=True)
class _Port:
    """``onnxruntime.NodeArg``'s ``name`` and ``shape`` (ints for static dimensions, names otherwise)."""

    name: str
    shape: list[int | str]


def compile_settings(num_threads: int | None = None, performance_hint: str = "LATENCY",
                     precision: str = "f32", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``compile_model`` configuration (see the module docstring); ``extra`` entries win."""
    settings: dict[str, Any] = {"PERFORMANCE_HINT": performance_hint, "INFERENCE_PRECISION_HINT": precision}
    if num_threads is not None:
        settings["INFERENCE_NUM_THREADS"] = int(num_threads)
    settings.update(extra or {})
    return settings


@functools.lru_cache(maxsize=1)
def shared_core() -> Any:
    """The process's one ``openvino.Core``, made on first use and kept until exit.

    One Core, not one per model: OpenVINO's CPU plugin (2026.4) installs its own alternate signal
    stack when a Core first loads it and puts back the one it found when that Core dies. Two Cores
    dying in the order they were made put back a stack already freed, and the next signal handled
    on it (SIGCHLD from a finished subprocess, under torch's DataLoader handler) kills the process
    with SIGSEGV. Loading the plugin once also saves its start-up on every later compile.
    """
    import openvino as ov

    return ov.Core()


def compile_model(path: str | PathLike[str], settings: Mapping[str, Any] | None = None) -> Any:
    """An ``openvino.CompiledModel`` of an ``.onnx`` file on the CPU (``settings``: :func:`compile_settings`'s
    by default)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    core = shared_core()
    return core.compile_model(core.read_model(str(path)), "CPU", dict(settings or compile_settings()))


class OpenVinoSession:
    """An OpenVINO compiled model behind the part of ``onnxruntime.InferenceSession``'s interface
    :class:`OnnxRunner` uses. One infer request is kept and reused: calls are not thread-safe.

    Args:
        compiled: an ``openvino.CompiledModel`` with one input.
        output_names: the graph's output names in order (OpenVINO keeps every name a tensor had;
            these pick the ONNX ones).
    """

    def __init__(self, compiled: Any, output_names: Sequence[str] | None = None) -> None:
        if len(compiled.inputs) != 1:
            raise ValueError(f"expected a graph with one input, got {len(compiled.inputs)}")
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        wanted = list(output_names or [])
        self._outputs = []
        for i, port in enumerate(compiled.outputs):
            names = port.get_names()
            name = wanted[i] if i < len(wanted) and wanted[i] in names else port.get_any_name()
            self._outputs.append(_Port(name, []))
        shape = compiled.inputs[0].get_partial_shape()
        dims: list[int | str] = [d.get_length() if d.is_static else f"dim{i}" for i, d in enumerate(shape)]
        self._input = _Port(compiled.inputs[0].get_any_name(), dims)

    def get_inputs(self) -> list[_Port]:
        return [self._input]

    def get_outputs(self) -> list[_Port]:
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Every output for ``feed`` ``{input name: array}`` (``output_names`` must be ``None``: all, in order)."""
        if output_names is not None:
            raise ValueError("OpenVinoSession.run returns every output: pass None")
        (array,) = feed.values()
        # share_inputs: the request reads the caller's array in place instead of copying it.
        self._request.infer({0: np.ascontiguousarray(array)}, share_inputs=True)
        # The request reuses its output buffers on the next call: hand out copies.
        return [self._request.get_output_tensor(i).data.copy() for i in range(len(self._outputs))]


def open_openvino_session(path: str | PathLike[str], *, num_threads: int | None = None,
                          settings: Mapping[str, Any] | None = None) -> tuple[OpenVinoSession, OnnxModelInfo]:
    """The compiled file behind a session-like object, and its metadata. ``settings`` replaces
    :func:`compile_settings` ``(num_threads)``."""
    info = read_metadata(path)
    compiled = compile_model(path, settings if settings is not None else compile_settings(num_threads))
    return OpenVinoSession(compiled, info.outputs), info


def load_openvino_runner(
    path: str | PathLike[str],
    *,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    num_threads: int | None = None,
    settings: Mapping[str, Any] | None = None,
) -> OnnxRunner:
    """An :class:`OnnxRunner` of an exported file on OpenVINO's CPU plugin (``score_threshold``,
    ``max_detections``: see :class:`OnnxRunner`; ``num_threads``, ``settings``: :func:`open_openvino_session`)."""
    session, info = open_openvino_session(path, num_threads=num_threads, settings=settings)
    return OnnxRunner(session, info, score_threshold=score_threshold, max_detections=max_detections)
