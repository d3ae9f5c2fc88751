"""ONNX Runtime (CPU) backend: run an exported ``.onnx`` with nothing but the file.

Everything the runner needs travels in the file's metadata (:mod:`detector.deploy.metadata`).
Graph inputs and outputs::

    images           float32[B, 3, H, W]  normalised (:mod:`detector.deploy.preprocess`)
    without NMS:  cls_logits [B, A, C] float32, bbox_regression [B, A, 4] float32
    with NMS:     boxes [B, D, 4] float32 xyxy network-input pixels, scores [B, D] float32,
                  labels [B, D] int64 in 1..K, num_detections [B] int64; rows past
                  num_detections[b] are padding (zeros, label 0). D = max_detections.

:class:`OnnxRunner` follows the runner contract of :mod:`detector.inference` (the same call as
:class:`detector.inference.TorchRunner`). Without NMS it turns the raw outputs into detections with
the model's own post-processing and anchors, rebuilt from the recipe in the metadata
(:meth:`detector.deploy.metadata.OnnxModelInfo.post_processor` / ``.anchors``), so there is one
implementation of decoding and NMS; with NMS it only slices the padded outputs. Either way boxes are
mapped to original pixels by :func:`detector.modeling.boxes.scale_boxes_to_image`.

    runner = load_onnx_runner("model.onnx")          # or Predictor.from_checkpoint("model.onnx")
    runner(images, image_sizes=[(480, 640)])[0]["boxes"]
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detector.deploy.metadata import OnnxModelInfo
from detector.modeling.boxes import scale_boxes_to_image

__all__ = ["ExportedRunner", "OnnxRunner", "create_session", "load_onnx_runner", "open_session"]


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
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        raise ValueError(f"{path}: ONNX Runtime cannot load it as an ONNX model; is it an export of "
                         f"tools/export.py? ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from error


class ExportedRunner:
    """What the runners of exported files share: the metadata (``info``), the CPU device, the input
    size and normalisation the file records, and the decoding settings (the user's, else the export's).

    Args:
        info: the file's metadata.
        score_threshold, max_detections: replace the exported settings (``None``: keep them).
    """

    def __init__(self, info: OnnxModelInfo, score_threshold: float | None, max_detections: int | None) -> None:
        self.info = info
        baked = info.postprocess
        self.score_threshold = float(baked["score_threshold"] if score_threshold is None else score_threshold)
        self.max_detections = int(baked["max_detections"] if max_detections is None else max_detections)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def image_size(self) -> tuple[int, int]:
        return self.info.image_size

    @property
    def mean(self) -> tuple[float, ...]:
        return self.info.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.info.std

    @property
    def resize(self) -> str:
        """The input resize the model expects (``detector.constants.RESIZES``)."""
        return str(self.info.config.get("resize", "opencv"))

    @property
    def view(self) -> dict[str, Any] | None:
        """How the model wants frames seen (:class:`detector.slicing.FrameView`'s config entry)."""
        return self.info.config.get("view")


class OnnxRunner(ExportedRunner):
    """The ONNX Runtime backend, following :mod:`detector.inference`'s runner contract (``device`` is
    always the CPU: inputs on another device are copied).

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
        super().__init__(info, score_threshold, max_detections)
        self.session = session
        names = [o.name for o in session.get_outputs()]
        if tuple(names) != info.outputs:
            raise ValueError(f"the graph's outputs {names} do not match its metadata ({list(info.outputs)})")
        shape = session.get_inputs()[0].shape
        # A graph exported without --dynamic-batch has a fixed batch (usually 1): feed it in chunks.
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.input_name = session.get_inputs()[0].name
        baked = info.postprocess
        if info.with_nms:
            if self.score_threshold < float(baked["score_threshold"]):
                warnings.warn(f"this graph has NMS built in and keeps scores above {baked['score_threshold']} only; "
                              f"score_threshold={self.score_threshold} cannot return more", stacklevel=2)
            if self.max_detections > int(baked["max_detections"]):
                warnings.warn(f"this graph has NMS built in and returns at most {baked['max_detections']} detections "
                              f"per image; max_detections={self.max_detections} cannot return more", stacklevel=2)
            self.post_processor = None
            self.anchors = self.anchor_levels = None
        else:
            self.post_processor = info.post_processor(self.score_threshold, self.max_detections)
            self.anchors, self.anchor_levels = info.anchors(), info.anchor_levels()

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
            return self.post_processor(cls_logits, bbox_regression, self.anchors, self.info.image_size, image_sizes,
                                       anchor_levels=self.anchor_levels)
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
                det["boxes"] = scale_boxes_to_image(det["boxes"], self.info.image_size, image_sizes[b])
            results.append(det)
        return results


def load_onnx_runner(
    path: str | PathLike[str],
    *,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    num_threads: int | None = None,
    session_options: Any = None,
) -> OnnxRunner:
    """An :class:`OnnxRunner` for an exported file (``num_threads``, ``session_options``: see
    :func:`create_session`; ``score_threshold``, ``max_detections``: see :class:`OnnxRunner`)."""
    session, info = open_session(path, num_threads=num_threads, session_options=session_options)
    return OnnxRunner(session, info, score_threshold=score_threshold, max_detections=max_detections)


def open_session(
    path: str | PathLike[str], *, num_threads: int | None = None, session_options: Any = None
) -> tuple[Any, OnnxModelInfo]:
    """The session of an exported file and its metadata, read from the session (the file is parsed once)."""
    session = create_session(path, num_threads=num_threads, session_options=session_options)
    return session, OnnxModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
