"""Export a classifier checkpoint to ONNX or ExecuTorch: normalised images in, logits out, labels in the metadata.

The ONNX graph has one input ``images`` ``float32[B, 3, S, S]`` (normalised with the metadata's
``mean`` / ``std`` after scaling pixels to 0..1) and one output ``logits`` ``float32[B, C]``
(softmax them for probabilities). It is written by the detector's own exporter
(:func:`detector.deploy.onnx_export.export_graph`), with the classifier's metadata
(:func:`detector.deploy.metadata.classifier_metadata`: ``task``, ``class_names``, ``image_size``,
``mean``, ``std``, ``num_classes``, ``width_mult``; read back with
:func:`detector.deploy.metadata.read_classifier_metadata`).

The ExecuTorch program (:func:`export_classifier_executorch`, XNNPACK, fp32 or int8) is written by the
detector's own program export (:func:`detector.deploy.executorch_export.export_program`): method
``forward``, input ``float32[1, 3, S, S]``, output ``logits [1, C]``, and a sidecar ``<program>.json``
holding the same classifier metadata plus ``runtime``, ``int8`` (and ``quantization``), ``outputs``.
int8 calibration images are pre-processed as :class:`detector.pretrain.predict.ClassifierPredictor`
does at inference (shorter side to ``S / 0.875``, centre crop, normalisation).
"""
from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import torch

from detector.deploy.executorch_export import ProgramResult, export_program
from detector.deploy.quantize import calibration_files
from detector.deploy.metadata import classifier_metadata, read_classifier_metadata, write_props
from detector.files import atomic_write
from detector.deploy.onnx_export import DEFAULT_OPSET, export_graph
from detector.pretrain.model import load_classifier
from detector.pretrain.predict import ClassifierPredictor

__all__ = ["export_classifier_executorch", "export_classifier_onnx", "quantize_classifier_onnx"]


def export_classifier_onnx(
    checkpoint: str | PathLike[str],
    output: str | PathLike[str],
    image_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> Path:
    """Write ``checkpoint``'s classifier (its EMA weights when it has them) to ``output`` as ONNX.

    Args:
        checkpoint: a classifier checkpoint (``tools/train_classifier.py``'s ``*.ckpt``), loaded as
            data only (a pickle that would run code is refused with ``ValueError``).
        output: the ``.onnx`` file to write (atomically; folders are created).
        image_size: the square input side; by default the one the classifier was trained at.
        opset: ONNX opset version.
        dynamic_batch: a symbolic batch dimension instead of a fixed batch of 1.

    Returns:
        ``output`` as a ``Path``.
    """
    model, meta = load_classifier(checkpoint)
    size = int(image_size or meta["image_size"])
    metadata = classifier_metadata(meta["class_names"], size, meta["mean"], meta["std"], meta["config"]["width_mult"])
    return export_graph(model, torch.zeros(1, 3, size, size), output, output_names=["logits"], metadata=metadata,
                        opset=opset, dynamic_batch=dynamic_batch)


def quantize_classifier_onnx(
    model: str | PathLike[str],
    output: str | PathLike[str],
    calibration_images: str | PathLike[str] | Sequence[str | PathLike[str]],
    calibration_count: int | None = 100,
) -> Path:
    """Quantize a classifier's fp32 ONNX export to int8 QDQ (ONNX Runtime's static quantization, the
    detector's settings: uint8 activations calibrated by MinMax, int8 per-channel weights), calibrated
    on images pre-processed as :class:`ClassifierPredictor` does (shorter side, centre crop). The
    metadata is the fp32 file's plus ``int8`` and ``quantization``. Returns ``output``."""
    import tempfile

    import onnx

    from detector.deploy.quantize import _quantize_static

    model, output = Path(model), Path(output)
    metadata = read_classifier_metadata(model)
    if metadata.get("int8"):
        raise ValueError(f"{model} is already quantized")
    predictor = ClassifierPredictor.from_checkpoint(model)
    files = calibration_files(calibration_images, calibration_count)

    class Reader:  # one image a batch: the export may have a fixed batch of 1
        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict | None:
            path = next(self._files, None)
            return None if path is None else {"images": predictor.preprocess([path]).numpy()}

        def rewind(self) -> None:
            self._files = iter(files)

    metadata.update(int8=True, quantization={
        "format": "QDQ", "activations": "uint8 per-tensor (asymmetric)", "weights": "int8 per-channel",
        "calibration": "MinMax", "calibration_images": len(files)})
    with tempfile.TemporaryDirectory(prefix="detector-quant-") as tmp:
        quantized_path = Path(tmp) / "quantized.onnx"
        _quantize_static(model, quantized_path, Reader(), per_channel=True)
        quantized = onnx.load(str(quantized_path))
    write_props(quantized, metadata)
    with atomic_write(output) as tmp_output:
        onnx.save(quantized, str(tmp_output))
    return output


def export_classifier_executorch(
    checkpoint: str | PathLike[str],
    output: str | PathLike[str],
    image_size: int | None = None,
    int8: bool = False,
    calibration_images: str | PathLike[str] | Sequence[str | PathLike[str]] | None = None,
    calibration_count: int | None = 100,
) -> ProgramResult:
    """Write ``checkpoint``'s classifier (its EMA weights when it has them) as an ExecuTorch program.

    Args:
        checkpoint: a classifier checkpoint, loaded as data only.
        output: the ``.pte`` to write (atomically; folders are created); its sidecar goes beside it
            (:func:`detector.deploy.executorch_export.sidecar_path`).
        image_size: the square input side; by default the one the classifier was trained at.
        int8: quantize (PT2E, XNNPACK quantizer, per-channel weights), calibrated on ``calibration_images``.
        calibration_images: a folder (searched recursively) or a list of image files.
        calibration_count: calibrate on this many of them (``None``: all).

    Returns:
        What was written (``path``, ``sidecar``, ``size_bytes``, ``max_abs_diff`` against PyTorch, ...).
    """
    if int8 and calibration_images is None:
        raise ValueError("int8 export needs calibration images")
    model, meta = load_classifier(checkpoint)
    size = int(image_size or meta["image_size"])
    metadata = classifier_metadata(meta["class_names"], size, meta["mean"], meta["std"], meta["config"]["width_mult"])
    metadata["outputs"] = ["logits"]
    calibration = None
    if int8:
        assert calibration_images is not None
        predictor = ClassifierPredictor(model, meta["class_names"], size, meta["mean"], meta["std"])
        files = calibration_files(calibration_images, calibration_count)
        calibration = (predictor.preprocess([path]) for path in files)
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return export_program(model, example, output, metadata, calibration=calibration)
