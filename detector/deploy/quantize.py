"""Static post-training int8 quantization of an exported detector with ONNX Runtime's tools.

    from detector.deploy.quantize import quantize_onnx
    quantize_onnx("model.onnx", "model.int8.onnx", "calibration/images", calibration_count=100)

- **Format**: QDQ (``QuantizeLinear``/``DequantizeLinear`` pairs around each quantized operator),
  which every ONNX Runtime execution provider and TensorRT read; uint8 activations (asymmetric),
  int8 weights **per output channel** (one scale per filter: depthwise MobileNet filters have very
  different ranges, so per-tensor weight scales lose a lot).
- **Calibration**: min/max of every activation over the user's images, each pre-processed exactly as
  :class:`detector.inference.Predictor` does (the same code, :mod:`detector.deploy.preprocess`: resize
  with ``cv2.INTER_LINEAR``, then ``(x / 255 - mean) / std``), so the ranges are those seen at inference.
- **What stays float**: the network is quantized; a ``--with-nms`` graph's decoding, scores and NMS
  (every node the exporter placed under ``/postprocess/``) stay float32: quantizing box arithmetic
  and softmax would cost accuracy and gain nothing.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from detector.data.io import IMAGE_SUFFIXES, list_images
from detector.deploy.metadata import OnnxModelInfo, read_metadata, write_props
from detector.deploy.preprocess import ImagePreprocessor, to_rgb_array
from detector.files import atomic_write

__all__ = ["ImageCalibrationReader", "QuantizeResult", "calibration_files", "find_calibration_images", "quantize_onnx"]

POSTPROCESS_SCOPE = "/postprocess/"


def find_calibration_images(folder: str | PathLike[str], count: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by path; the first ``count`` (all if ``None``),
    spread evenly over the sorted list when there are more, so one sub-folder does not take them all."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration images folder not found: {folder}")
    files = list_images(folder)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    if count is not None:
        if count < 1:
            raise ValueError(f"calibration count must be at least 1, got {count}")
        if count < len(files):
            picks = np.linspace(0, len(files) - 1, count).round().astype(int)
            files = [files[i] for i in picks]
    return files


class ImageCalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over image files.

    Args:
        images: the files (decoded with :func:`detector.deploy.preprocess.to_rgb_array`).
        info: the exported model's metadata (image size, mean, std, label map).
        input_name: the graph's input.
        batch_size: images per calibration batch (1 for graphs exported without a dynamic batch).
        progress: a ``tqdm`` bar over the images.

    ``get_next()`` returns ``{input_name: float32[B, 3, H, W]}`` or ``None`` at the end.
    """

    def __init__(
        self,
        images: Sequence[str | PathLike[str]],
        info: OnnxModelInfo,
        input_name: str = "images",
        batch_size: int = 1,
        progress: bool = False,
    ) -> None:
        self.images = [Path(p) for p in images]
        self.input_name = input_name
        self.batch_size = int(batch_size)
        self.progress = progress
        # The Predictor's own pre-processing, so calibration sees exactly what inference feeds.
        self._preprocess = ImagePreprocessor(info.image_size, info.mean, info.std,
                                             resize=str(info.config.get("resize", "opencv")))
        self._iter: Iterator[dict[str, np.ndarray]] | None = None
        self._bar: Any = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.images), self.batch_size):
            chunk = self.images[start: start + self.batch_size]
            batch = self._preprocess([to_rgb_array(p) for p in chunk])
            if self._bar is not None:
                self._bar.update(len(chunk))
            yield {self.input_name: batch.numpy()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            if self.progress:
                from tqdm import tqdm

                self._bar = tqdm(total=len(self.images), desc="calibration", unit="img")
            self._iter = self._batches()
        item = next(self._iter, None)
        if item is None and self._bar is not None:
            self._bar.close()
            self._bar = None
        return item

    def rewind(self) -> None:
        self._iter = None

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class QuantizeResult:
    """What :func:`quantize_onnx` wrote."""

    path: Path
    info: OnnxModelInfo
    calibration_images: int
    quantized_nodes: int  # QuantizeLinear nodes in the result
    size_bytes: int


def quantize_onnx(
    model: str | PathLike[str],
    output: str | PathLike[str],
    calibration_images: str | PathLike[str] | Sequence[str | PathLike[str]],
    *,
    calibration_count: int | None = 100,
    per_channel: bool = True,
    progress: bool = False,
) -> QuantizeResult:
    """Quantize an fp32 export (``tools/export.py``'s) to int8 QDQ, calibrated on user images.

    Args:
        model: the fp32 ``.onnx`` (raw or with NMS).
        output: where the int8 ``.onnx`` goes; it carries the same metadata plus ``int8``/``quantization``.
        calibration_images: a folder (searched recursively) or a list of image files.
        calibration_count: use this many images (spread over the sorted list; ``None``: all).
        per_channel: one weight scale per output channel (recommended).
        progress: show a progress bar over the calibration images.
    """
    import onnx

    model, output = Path(model), Path(output)
    info = read_metadata(model)
    if info.int8:
        raise ValueError(f"{model} is already quantized")
    files = calibration_files(calibration_images, calibration_count)
    proto = onnx.load(str(model), load_external_data=False)
    input_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    batch_size = 1 if input_dim.HasField("dim_value") else 8
    reader = ImageCalibrationReader(files, info, proto.graph.input[0].name, batch_size, progress)
    meta = {
        "format": "QDQ", "activations": "uint8 per-tensor (asymmetric)", "weights": "int8 per-channel" if per_channel
        else "int8 per-tensor", "calibration": "MinMax", "calibration_images": len(files),
    }
    out_info = replace(info, int8=True, quantization=meta)
    with tempfile.TemporaryDirectory(prefix="detector-quant-") as tmp:
        quantized_path = Path(tmp) / "quantized.onnx"
        _quantize_static(model, quantized_path, reader, per_channel)
        quantized = onnx.load(str(quantized_path))
    write_props(quantized, out_info.to_metadata())
    with atomic_write(output) as tmp_output:  # a kill leaves no half-written int8 file
        onnx.save(quantized, str(tmp_output))
    nodes = sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    return QuantizeResult(output, out_info, len(files), nodes, output.stat().st_size)


def calibration_files(
    calibration_images: str | PathLike[str] | Sequence[str | PathLike[str]], count: int | None
) -> list[Path]:
    """A folder's images (:func:`find_calibration_images`: ``count`` spread over the sorted list) or the
    first ``count`` files of a list (``None``: all); shared by the ONNX and ExecuTorch int8 exports."""
    if isinstance(calibration_images, (str, PathLike)):
        return find_calibration_images(calibration_images, count)
    files = [Path(p) for p in calibration_images][: count or None]
    if not files:
        raise ValueError("no calibration images")
    return files


def _quantize_static(model: Path, output: Path, reader: ImageCalibrationReader, per_channel: bool) -> None:
    """ONNX Runtime's pre-processing, then static QDQ quantization of all but the post-processing."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):  # ORT checks the base class
        def get_next(self) -> dict[str, np.ndarray] | None:
            return reader.get_next()

        def rewind(self) -> None:
            reader.rewind()

    prepared = output.with_name("prepared.onnx")
    # ORT's recommended pre-processing (shape inference and graph clean-up); the optimiser keeps
    # node names, so the post-processing scope is still recognisable after it.
    quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
    exclude = [n.name for n in onnx.load(str(prepared)).graph.node if n.name.startswith(POSTPROCESS_SCOPE)]
    quantize_static(
        str(prepared),
        str(output),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude,
        calibrate_method=CalibrationMethod.MinMax,
    )
