"""Export a classifier checkpoint to ONNX: normalised images in, logits out, labels in the metadata.

The ONNX graph has one input ``images`` ``float32[B, 3, S, S]`` (normalised with the metadata's
``mean`` / ``std`` after scaling pixels to 0..1) and one output ``logits`` ``float32[B, C]``
(softmax them for probabilities). ``metadata_props`` (all JSON strings):
``task`` = ``"classification"``, ``class_names`` (logit ``i``'s name), ``image_size`` ``[S, S]``,
``mean``, ``std``, ``num_classes``, ``width_mult``.
"""
from __future__ import annotations

import json
import os
import tempfile
from os import PathLike
from pathlib import Path

import onnx
import torch

from detector.pretrain.model import load_classifier

__all__ = ["export_classifier_onnx", "read_classifier_onnx_metadata"]


def export_classifier_onnx(
    checkpoint: str | PathLike[str],
    output: str | PathLike[str],
    image_size: int | None = None,
    opset: int = 17,
    dynamic_batch: bool = False,
) -> Path:
    """Write ``checkpoint``'s classifier (its EMA weights when it has them) to ``output`` as ONNX.

    Args:
        checkpoint: a classifier checkpoint (``tools/train_classifier.py``'s ``*.ckpt``).
        output: the ``.onnx`` file to write (atomically; folders are created).
        image_size: the square input side; by default the one the classifier was trained at.
        opset: ONNX opset version.
        dynamic_batch: a symbolic batch dimension instead of a fixed batch of 1.

    Returns:
        ``output`` as a ``Path``.
    """
    model, meta = load_classifier(checkpoint)
    size = int(image_size or meta["image_size"])
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, size, size)
    dynamic_axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with torch.no_grad():
            # dynamo=False: the TorchScript exporter; the dynamo one needs onnxscript.
            torch.onnx.export(model, (dummy,), tmp, input_names=["images"], output_names=["logits"],
                              opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
        proto = onnx.load(tmp)
        metadata = {
            "task": "classification",
            "class_names": meta["class_names"],
            "image_size": [size, size],
            "mean": meta["mean"],
            "std": meta["std"],
            "num_classes": len(meta["class_names"]),
            "width_mult": meta["config"]["width_mult"],
        }
        del proto.metadata_props[:]
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return output


def read_classifier_onnx_metadata(path: str | PathLike[str]) -> dict[str, object]:
    """The decoded ``metadata_props`` of an exported classifier (keys as in the module docstring)."""
    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: json.loads(entry.value) for entry in proto.metadata_props}
