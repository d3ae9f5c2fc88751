"""ONNX metadata: what an exported file says about itself, written and read here only.

Every entry of an exported file's ``metadata_props`` is a JSON document. A **detector** export
(:func:`detector.deploy.onnx_export.export_onnx`) carries:

===================== ======================================================================
key                   value
===================== ======================================================================
``detector_format``   ``1`` (the version of this layout)
``label_map``         ``{"category_ids": [...], "names": [...]}`` (:class:`detector.labels.LabelMap`)
``image_size``        ``[H, W]`` of the network input
``mean``, ``std``     RGB normalisation in 0..1 (input = ``(pixels / 255 - mean) / std``)
``with_nms``          ``true``: outputs are final detections; ``false``: raw head outputs
``config``            the ``build_model`` config of the exported model (the recipe)
``feature_sizes``     ``[[h, w], ...]`` of the maps the heads read (six, or seven)
``box_coder_weights`` ``[10, 10, 5, 5]``
``postprocess``       ``{"score_threshold", "nms_threshold", "topk_candidates", "max_detections",
                      "classification"}``: the decoding settings (baked into the graph when ``with_nms``)
``outputs``           the output names, in order
``int8``              ``true`` for a quantized graph (then also ``quantization``: how it was made)
===================== ======================================================================

Anchors and post-processing are not described twice: :meth:`OnnxModelInfo.anchors` and
:meth:`OnnxModelInfo.post_processor` rebuild them from ``config`` (and ``feature_sizes``) through
the model's own builders (:func:`detector.modeling.ssdlite.build_anchor_generator`,
:func:`~detector.modeling.ssdlite.build_post_processor`), so every anchor option reaches the ONNX path.

A **classifier** export (:func:`detector.pretrain.export.export_classifier_onnx`) carries ``task`` =
``"classification"``, ``class_names`` (logit ``i``'s name), ``image_size`` ``[S, S]``, ``mean``,
``std``, ``num_classes`` and ``width_mult`` (:func:`classifier_metadata`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from torch import Tensor

from detector.labels import LabelMap
from detector.modeling.postprocess import PostProcessor
from detector.modeling.ssdlite import (
    BOX_CODER_WEIGHTS,
    SSDLite,
    build_anchor_generator,
    build_post_processor,
)

__all__ = [
    "FORMAT_VERSION",
    "INPUT_NAME",
    "NMS_OUTPUTS",
    "POSTPROCESS_KEYS",
    "RAW_OUTPUTS",
    "OnnxModelInfo",
    "classifier_metadata",
    "detector_info",
    "read_classifier_metadata",
    "read_metadata",
    "read_props",
    "write_props",
]

FORMAT_VERSION = 1
INPUT_NAME = "images"
RAW_OUTPUTS = ("cls_logits", "bbox_regression")
NMS_OUTPUTS = ("boxes", "scores", "labels", "num_detections")
POSTPROCESS_KEYS = ("score_threshold", "nms_threshold", "topk_candidates", "max_detections", "classification")


# --- the one encoding: metadata_props <-> JSON values -------------------------------------------


def write_props(model_proto: Any, entries: Mapping[str, Any]) -> None:
    """Set ``entries`` (JSON-encoded) in an ``onnx.ModelProto``'s ``metadata_props``, replacing
    entries of the same keys and keeping the others."""
    encoded = {key: json.dumps(value) for key, value in entries.items()}
    kept = [(p.key, p.value) for p in model_proto.metadata_props if p.key not in encoded]
    del model_proto.metadata_props[:]
    for key, value in [*kept, *encoded.items()]:
        prop = model_proto.metadata_props.add()
        prop.key, prop.value = key, value


def read_props(path: str | PathLike[str]) -> dict[str, str]:
    """The raw ``metadata_props`` of an ONNX file (``onnx.load``: the whole file is parsed; runners take
    the metadata from their session instead, :func:`detector.deploy.onnx_runtime.open_session`)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


# --- detector ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxModelInfo:
    """What an exported detector says about itself (its ``metadata_props``, decoded)."""

    label_map: LabelMap
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    with_nms: bool
    config: dict[str, Any]
    feature_sizes: tuple[tuple[int, int], ...]
    box_coder_weights: tuple[float, float, float, float] = BOX_CODER_WEIGHTS
    postprocess: dict[str, Any] = field(default_factory=dict)
    int8: bool = False
    quantization: dict[str, Any] | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        return NMS_OUTPUTS if self.with_nms else RAW_OUTPUTS

    def to_metadata(self) -> dict[str, Any]:
        """``metadata_props`` entries as JSON values (:func:`write_props` encodes them)."""
        data: dict[str, Any] = {
            "detector_format": FORMAT_VERSION,
            "label_map": self.label_map.to_dict(),
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "with_nms": self.with_nms,
            "config": self.config,
            "feature_sizes": [list(s) for s in self.feature_sizes],
            "box_coder_weights": list(self.box_coder_weights),
            "postprocess": self.postprocess,
            "outputs": list(self.outputs),
            "int8": self.int8,
        }
        if self.quantization is not None:
            data["quantization"] = self.quantization
        return data

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], source: str = "the ONNX file") -> OnnxModelInfo:
        """Decode raw ``metadata_props``; ``ValueError`` naming ``source`` when it was not exported by us."""
        if "detector_format" not in props:
            kind = "a classifier export" if "class_names" in props else "not a detector export"
            raise ValueError(
                f"{source}: no detector metadata (label map, image size, normalisation): {kind}; "
                "export it with tools/export.py"
            )
        try:
            data = {k: json.loads(v) for k, v in props.items() if k in _KNOWN_KEYS}
            version = int(data["detector_format"])
            if version > FORMAT_VERSION:
                raise ValueError(f"metadata format {version} is newer than this version reads ({FORMAT_VERSION})")
            h, w = data["image_size"]
            return cls(
                label_map=LabelMap.from_dict(data["label_map"]),
                image_size=(int(h), int(w)),
                mean=tuple(float(m) for m in data["mean"]),  # type: ignore[arg-type]
                std=tuple(float(s) for s in data["std"]),  # type: ignore[arg-type]
                with_nms=bool(data["with_nms"]),
                config=dict(data["config"]),
                feature_sizes=tuple((int(a), int(b)) for a, b in data["feature_sizes"]),
                box_coder_weights=tuple(float(x) for x in data.get("box_coder_weights", BOX_CODER_WEIGHTS)),  # type: ignore[arg-type]
                postprocess=dict(data["postprocess"]),
                int8=bool(data.get("int8", False)),
                quantization=data.get("quantization"),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"{source}: unreadable detector metadata ({type(err).__name__}: {err})") from err

    def post_processor(self, score_threshold: float | None = None, max_detections: int | None = None) -> PostProcessor:
        """The model's post-processing, built from its recipe with the exported settings (optionally
        another score threshold or detection cap)."""
        settings = {**self.config, **self.postprocess}
        if score_threshold is not None:
            settings["score_threshold"] = float(score_threshold)
        if max_detections is not None:
            settings["max_detections"] = int(max_detections)
        return build_post_processor(settings)

    def anchors(self) -> Tensor:
        """``[A, 4]`` xyxy anchors in network-input pixels, from the recipe's own anchor builder."""
        return build_anchor_generator(self.config)(self.feature_sizes, self.image_size)

    def anchor_levels(self) -> Tensor:
        """Int64Tensor[A]: the pyramid level of each anchor (the post-processor's ``anchor_levels``)."""
        return build_anchor_generator(self.config).levels(self.feature_sizes)


_KNOWN_KEYS = frozenset({
    "detector_format", "label_map", "image_size", "mean", "std", "with_nms", "config", "feature_sizes",
    "box_coder_weights", "postprocess", "outputs", "int8", "quantization",
})


def detector_info(model: SSDLite, label_map: LabelMap, with_nms: bool) -> OnnxModelInfo:
    """The metadata of ``model`` exported with or without NMS in the graph."""
    pp = model.post_processor
    config = dict(model.config)
    config["pretrained_backbone"] = "none"  # the weights travel in the file
    return OnnxModelInfo(
        label_map=label_map,
        image_size=tuple(model.image_size),  # type: ignore[arg-type]
        mean=tuple(model.mean),  # type: ignore[arg-type]
        std=tuple(model.std),  # type: ignore[arg-type]
        with_nms=with_nms,
        config=config,
        feature_sizes=tuple(tuple(int(v) for v in s) for s in model.feature_sizes),  # type: ignore[arg-type]
        box_coder_weights=tuple(pp.box_coder.weights),  # type: ignore[arg-type]
        postprocess={k: getattr(pp, k) for k in POSTPROCESS_KEYS},
    )


def read_metadata(path: str | PathLike[str]) -> OnnxModelInfo:
    """The detector metadata of an ONNX file."""
    return OnnxModelInfo.from_metadata(read_props(path), str(path))


# --- classifier ----------------------------------------------------------------------------------


def classifier_metadata(
    class_names: Sequence[str], image_size: int, mean: Sequence[float], std: Sequence[float], width_mult: float
) -> dict[str, Any]:
    """The ``metadata_props`` entries (JSON values) of a classifier export."""
    return {
        "task": "classification",
        "class_names": list(class_names),
        "image_size": [int(image_size), int(image_size)],
        "mean": list(mean),
        "std": list(std),
        "num_classes": len(class_names),
        "width_mult": width_mult,
    }


_CLASSIFIER_KEYS = frozenset({"task", "class_names", "image_size", "mean", "std", "num_classes", "width_mult",
                               "int8", "quantization"})


def read_classifier_metadata(path: str | PathLike[str]) -> dict[str, Any]:
    """The decoded metadata of a classifier export (keys as :func:`classifier_metadata` writes them)."""
    props = read_props(path)
    if "class_names" not in props:
        raise ValueError(f"{path}: not a classifier export (no class_names in its metadata)")
    # Only this project's keys: other tools add their own (ONNX Runtime's quantizer: plain strings).
    return {key: json.loads(value) for key, value in props.items() if key in _CLASSIFIER_KEYS}
