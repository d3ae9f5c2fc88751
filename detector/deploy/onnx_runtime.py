"""ONNX Runtime (CPU) backend: run an exported ``.onnx`` with nothing but the file.

Everything a runner needs travels in the file's ``metadata_props`` (each value a JSON document),
written by :func:`detector.deploy.onnx_export.export_onnx` and read back by :meth:`OnnxModelInfo.from_metadata`:

================== ==========================================================================
key                value
================== ==========================================================================
``detector_format`` ``1`` (the version of this layout)
``label_map``      ``{"category_ids": [...], "names": [...]}`` (:class:`detector.labels.LabelMap`)
``image_size``     ``[H, W]`` of the network input
``mean``, ``std``  RGB normalisation in 0..1 (input = ``(pixels / 255 - mean) / std``)
``with_nms``       ``true``: outputs are final detections; ``false``: raw head outputs
``config``         the ``build_model`` config of the exported model
``feature_sizes``  ``[[h, w], ...]`` of the six maps the heads read (anchors are rebuilt from them)
``box_coder_weights`` ``[10, 10, 5, 5]``
``postprocess``    ``{"score_threshold", "nms_threshold", "topk_candidates", "max_detections",
                   "classification"}``: the decoding settings (baked into the graph when ``with_nms``)
``outputs``        the output names, in order
``int8``           ``true`` for a quantized graph (then also ``quantization``: how it was made)
================== ==========================================================================

Graph inputs and outputs::

    images           float32[B, 3, H, W]  normalised like the Predictor does
    without NMS:  cls_logits [B, A, C] float32, bbox_regression [B, A, 4] float32
    with NMS:     boxes [B, D, 4] float32 xyxy network-input pixels, scores [B, D] float32,
                  labels [B, D] int64 in 1..K, num_detections [B] int64; rows past
                  num_detections[b] are padding (zeros, label 0). D = max_detections.

Without NMS, :class:`OnnxRunner` turns the raw outputs into detections with the project's own
:class:`detector.modeling.postprocess.PostProcessor` (ORT outputs -> ``torch.from_numpy``, anchors rebuilt by
:class:`detector.modeling.anchors.DefaultBoxGenerator` from ``config`` and ``feature_sizes``), so there is
one implementation of decoding and NMS; with NMS it only slices the padded outputs.

    predictor = load_onnx_predictor("model.onnx", score_threshold=0.4)   # or Predictor.from_onnx
    predictor.predict("photo.jpg")["boxes"]
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detector.modeling.anchors import DefaultBoxGenerator
from detector.modeling.boxes import BoxCoder
from detector.inference import Predictor
from detector.labels import LabelMap
from detector.modeling.postprocess import PostProcessor

__all__ = [
    "FORMAT_VERSION",
    "NMS_OUTPUTS",
    "RAW_OUTPUTS",
    "OnnxModelInfo",
    "OnnxRunner",
    "create_session",
    "load_onnx_predictor",
    "load_onnx_runner",
    "read_metadata",
]

FORMAT_VERSION = 1
INPUT_NAME = "images"
RAW_OUTPUTS = ("cls_logits", "bbox_regression")
NMS_OUTPUTS = ("boxes", "scores", "labels", "num_detections")
POSTPROCESS_KEYS = ("score_threshold", "nms_threshold", "topk_candidates", "max_detections", "classification")


@dataclass(frozen=True)
class OnnxModelInfo:
    """What an exported file says about itself (its ``metadata_props``, decoded)."""

    label_map: LabelMap
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    with_nms: bool
    config: dict[str, Any]
    feature_sizes: tuple[tuple[int, int], ...]
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    postprocess: dict[str, Any] = field(default_factory=dict)
    int8: bool = False
    quantization: dict[str, Any] | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        return NMS_OUTPUTS if self.with_nms else RAW_OUTPUTS

    def to_metadata(self) -> dict[str, str]:
        """``metadata_props`` entries: every value a JSON document."""
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
        return {k: json.dumps(v) for k, v in data.items()}

    @classmethod
    def from_metadata(cls, props: dict[str, str], source: str = "the ONNX file") -> "OnnxModelInfo":
        """Decode ``metadata_props``; ``ValueError`` naming ``source`` when it was not exported by us."""
        if "detector_format" not in props:
            raise ValueError(
                f"{source}: no detector metadata (label map, image size, normalisation); "
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
                box_coder_weights=tuple(float(x) for x in data.get("box_coder_weights", (10, 10, 5, 5))),  # type: ignore[arg-type]
                postprocess=dict(data["postprocess"]),
                int8=bool(data.get("int8", False)),
                quantization=data.get("quantization"),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"{source}: unreadable detector metadata ({type(err).__name__}: {err})") from err

    def post_processor(self, score_threshold: float | None = None, max_detections: int | None = None) -> PostProcessor:
        """The model's post-processing (optionally with another threshold or cap)."""
        pp = self.postprocess
        return PostProcessor(
            BoxCoder(self.box_coder_weights),  # type: ignore[arg-type]
            score_threshold=float(pp["score_threshold"] if score_threshold is None else score_threshold),
            nms_threshold=float(pp["nms_threshold"]),
            topk_candidates=int(pp["topk_candidates"]),
            max_detections=int(pp["max_detections"] if max_detections is None else max_detections),
            classification=str(pp["classification"]),
        )

    def anchors(self) -> Tensor:
        """``[A, 4]`` xyxy anchors in network-input pixels, rebuilt exactly as ``build_model`` does."""
        cfg = self.config
        generator = DefaultBoxGenerator(
            num_levels=len(self.feature_sizes),
            min_scale=cfg["min_scale"],
            max_scale=cfg["max_scale"],
            aspect_ratios=cfg["aspect_ratios"],
            reduce_boxes_in_lowest_layer=cfg["reduce_boxes_in_lowest_layer"],
        )
        return generator(self.feature_sizes, self.image_size)


_KNOWN_KEYS = frozenset({
    "detector_format", "label_map", "image_size", "mean", "std", "with_nms", "config", "feature_sizes",
    "box_coder_weights", "postprocess", "outputs", "int8", "quantization",
})


def read_metadata(path: str | PathLike[str]) -> OnnxModelInfo:
    """The detector metadata of an ONNX file (reads the graph structure, not the weights)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    model = onnx.load(str(path), load_external_data=False)
    return OnnxModelInfo.from_metadata({p.key: p.value for p in model.metadata_props}, str(path))


def create_session(
    path: str | PathLike[str], *, num_threads: int | None = None, session_options: Any = None
) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU execution provider.

    Args:
        num_threads: intra-op threads (``None``: ONNX Runtime's default, one per core).
        session_options: an ``onnxruntime.SessionOptions`` to use as is (``num_threads`` still applies).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = session_options if session_options is not None else ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """The ONNX Runtime backend, following :mod:`detector.inference`'s runner contract.

    Args:
        session: an ``onnxruntime.InferenceSession`` of an exported detector.
        info: its metadata.
        score_threshold: keep detections scoring above this (``None``: the exported model's). With a
            ``with_nms`` graph the graph's own threshold is baked in: a lower value cannot bring
            back boxes the graph dropped (a warning says so).
        max_detections: detections per image (``None``: the exported model's; same caveat).
    """

    def __init__(
        self,
        session: Any,
        info: OnnxModelInfo,
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> None:
        self.session = session
        self.info = info
        names = [o.name for o in session.get_outputs()]
        if tuple(names) != info.outputs:
            raise ValueError(f"the graph's outputs {names} do not match its metadata ({list(info.outputs)})")
        shape = session.get_inputs()[0].shape
        # A graph exported without --dynamic-batch has a fixed batch (usually 1): feed it in chunks.
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.input_name = session.get_inputs()[0].name
        baked = info.postprocess
        self.score_threshold = float(baked["score_threshold"] if score_threshold is None else score_threshold)
        self.max_detections = int(baked["max_detections"] if max_detections is None else max_detections)
        if info.with_nms:
            if self.score_threshold < float(baked["score_threshold"]):
                warnings.warn(f"this graph has NMS built in and keeps scores above {baked['score_threshold']} only; "
                              f"score_threshold={self.score_threshold} cannot return more", stacklevel=2)
            if self.max_detections > int(baked["max_detections"]):
                warnings.warn(f"this graph has NMS built in and returns at most {baked['max_detections']} detections "
                              f"per image; max_detections={self.max_detections} cannot return more", stacklevel=2)
            self.post_processor = None
            self.anchors = None
        else:
            self.post_processor = info.post_processor(self.score_threshold, self.max_detections)
            self.anchors = info.anchors()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def run(self, images: Tensor | np.ndarray) -> list[np.ndarray]:
        """The graph's raw outputs (in ``info.outputs`` order) for ``images`` ``[B, 3, H, W]`` normalised."""
        array = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim != 4 or tuple(array.shape[1:]) != (3, *self.info.image_size):
            raise ValueError(f"expected images [B, 3, {self.info.image_size[0]}, {self.info.image_size[1]}], "
                             f"got {list(array.shape)}")
        step = self.fixed_batch or len(array)
        if step == len(array):
            return self.session.run(None, {self.input_name: array})
        if len(array) % step:
            raise ValueError(f"this graph takes batches of {step} images; got {len(array)} "
                             "(export with --dynamic-batch for any batch size)")
        chunks = [self.session.run(None, {self.input_name: array[i: i + step]}) for i in range(0, len(array), step)]
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def __call__(
        self, images: Tensor | np.ndarray, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[dict[str, Tensor]]:
        """Detections per image: ``boxes [N, 4]`` xyxy in network-input pixels (or in ``image_sizes``
        pixels, ``(h, w)`` each, when given), ``scores [N]`` descending, ``labels [N]`` in 1..K."""
        outputs = self.run(images)
        if not self.info.with_nms:
            assert self.post_processor is not None and self.anchors is not None
            cls_logits, bbox_regression = (torch.from_numpy(o) for o in outputs)
            return self.post_processor(cls_logits, bbox_regression, self.anchors, self.info.image_size, image_sizes)
        boxes, scores, labels, counts = outputs
        results = []
        for b in range(len(counts)):
            n = int(counts[b])
            keep = scores[b, :n] > self.score_threshold
            keep[self.max_detections:] = False  # rows are sorted by descending score
            det = {
                "boxes": torch.from_numpy(boxes[b, :n][keep]),
                "scores": torch.from_numpy(scores[b, :n][keep]),
                "labels": torch.from_numpy(labels[b, :n][keep].astype(np.int64)),
            }
            if image_sizes is not None:
                det["boxes"] = _rescale(det["boxes"], self.info.image_size, image_sizes[b])
            results.append(det)
        return results


def _rescale(boxes: Tensor, input_size: tuple[int, int], size: Sequence[int]) -> Tensor:
    """Network-input pixels -> an ``(h, w)`` image's pixels, clipped; the PostProcessor's arithmetic."""
    in_h, in_w = input_size
    h, w = float(size[0]), float(size[1])
    scale = torch.tensor([w / in_w, h / in_h, w / in_w, h / in_h], dtype=torch.float32)
    limit = torch.tensor([w, h, w, h], dtype=torch.float32)
    return torch.minimum((boxes * scale).clamp(min=0), limit)


def load_onnx_runner(
    path: str | PathLike[str],
    *,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    num_threads: int | None = None,
    session_options: Any = None,
) -> OnnxRunner:
    """An :class:`OnnxRunner` for an exported file (what ``tools/eval.py`` uses for ``.onnx``)."""
    session = create_session(path, num_threads=num_threads, session_options=session_options)
    info = OnnxModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    return OnnxRunner(session, info, score_threshold=score_threshold, max_detections=max_detections)


def load_onnx_predictor(
    path: str | PathLike[str],
    *,
    num_threads: int | None = None,
    session_options: Any = None,
    device: str | torch.device = "cpu",
    **kwargs: Any,
) -> Predictor:
    """A :class:`detector.inference.Predictor` over an exported file, on ONNX Runtime's CPU provider.

    ``kwargs`` are the Predictor's (``score_threshold``, ``classes``, ``max_detections``). As with
    the PyTorch backend, the runner keeps candidates down to ``min(model threshold, score_threshold)``
    and the Predictor applies the user's threshold after it.
    """
    if torch.device(device).type != "cpu":
        raise ValueError(f"the ONNX backend runs on the CPU only (device={device!r})")
    session = create_session(path, num_threads=num_threads, session_options=session_options)
    info = OnnxModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    baked = info.postprocess
    user_threshold = kwargs.get("score_threshold")
    user_cap = kwargs.get("max_detections")
    runner = OnnxRunner(
        session,
        info,
        score_threshold=None if user_threshold is None else min(float(baked["score_threshold"]), float(user_threshold)),
        max_detections=None if user_cap is None else max(int(baked["max_detections"]), int(user_cap)),
    )
    return Predictor(runner, info.label_map, info.image_size, info.mean, info.std, device="cpu", **kwargs)
