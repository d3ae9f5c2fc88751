"""Export a classifier checkpoint to ONNX: normalised images in, logits out, labels in the metadata.

The ONNX graph has one input ``images`` ``float32[B, 3, S, S]`` (normalised with the metadata's
``mean`` / ``std`` after scaling pixels to 0..1) and one output ``logits`` ``float32[B, C]``
(softmax them for probabilities). It is written by the detector's own exporter
(:func:`detector.deploy.onnx_export.export_graph`), with the classifier's metadata
(:func:`detector.deploy.metadata.classifier_metadata`: ``task``, ``class_names``, ``image_size``,
``mean``, ``std``, ``num_classes``, ``width_mult``; read back with
:func:`detector.deploy.metadata.read_classifier_metadata`).
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import torch

from detector.deploy.metadata import classifier_metadata
from detector.deploy.onnx_export import DEFAULT_OPSET, export_graph
from detector.pretrain.model import load_classifier

__all__ = ["export_classifier_onnx"]


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
