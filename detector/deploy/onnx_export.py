"""Export an SSDLite to ONNX, with the metadata that lets it run from the file alone.

    from detector.deploy.onnx_export import export_checkpoint
    result = export_checkpoint("best.ckpt", "model.onnx", dynamic_batch=True, with_nms=True)

Two graphs (input ``images`` float32 ``[B, 3, H, W]``, normalised with the model's mean/std):

- **raw** (default): ``cls_logits [B, A, C]``, ``bbox_regression [B, A, 4]``: ``SSDLite.forward`` as is.
  :class:`detector.deploy.onnx_runtime.OnnxRunner` decodes them with the project's ``PostProcessor``.
- **with NMS** (``with_nms=True``): decoding, top-k, per-class NMS (ONNX ``NonMaxSuppression``) and
  the per-image cap are in the graph, which returns ``boxes [B, D, 4]`` (xyxy, network-input
  pixels), ``scores [B, D]``, ``labels [B, D]`` (int64, 1..K) and ``num_detections [B]`` (int64),
  ``D = max_detections``, padded with zeros (label 0) past ``num_detections``; fixed shapes, what a
  mobile runtime wants (TFLite's detection post-process has the same layout).

How the NMS graph reproduces :class:`detector.modeling.postprocess.PostProcessor` (see
:class:`InGraphPostProcess`): scores are softmax (or sigmoid for focal models) without the
background, transposed to ``[B, K, A]``; all but each class's ``topk_candidates`` best anchors are
zeroed (``TopK`` + ``ScatterElements``); every anchor's box is decoded and clipped to the input;
``NonMaxSuppression`` (boxes ``[B, A, 4]``, scores ``[B, K, A]``, ``iou_threshold = nms_threshold``,
``score_threshold`` strict ``>`` like the PostProcessor's, ``max_output_boxes_per_class =
max_detections``, which cannot drop a box the final cap would keep) gives ``(batch, class, anchor)``
triples; their scores are scattered into a ``[B, K * A]`` map filled with -1 and a ``TopK`` of
``max_detections`` per image picks the final boxes, best first. The result is the PostProcessor's
up to the order of exactly equal scores and float rounding (softmax and the IoU are computed by
ONNX Runtime instead of PyTorch). What the graph cannot do: change the thresholds at run time
(they are constants of the graph; a runner can only raise the score threshold or lower the cap),
and boxes come out in network-input pixels: scale them by ``(w / W, h / H)`` to the original image.
"""
from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detector.checkpoint import load_checkpoint
from detector.deploy.metadata import (
    INPUT_NAME,
    OnnxModelInfo,
    detector_info,
    write_props,
)
from detector.files import atomic_write
from detector.labels import LabelMap
from detector.modeling.boxes import BoxCoder
from detector.modeling.ssdlite import SSDLite, build_model

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "ExportResult",
    "InGraphPostProcess",
    "MultiClassNMS",
    "NmsExportModule",
    "export_checkpoint",
    "export_graph",
    "export_onnx",
    "multiclass_nms",
    "resize_model",
]

DEFAULT_OPSET = 17
MIN_OPSET = 11  # NonMaxSuppression with score_threshold input, ScatterElements, TopK with a k input


def multiclass_nms(
    boxes: Tensor, scores: Tensor, max_output_boxes_per_class: int, iou_threshold: float, score_threshold: float
) -> Tensor:
    """ONNX ``NonMaxSuppression`` (``center_point_box=0``) computed with ``torchvision.ops.batched_nms``.

    Args:
        boxes: ``[B, A, 4]`` xyxy, shared by every class.
        scores: ``[B, C, A]``.
        max_output_boxes_per_class: at most this many boxes per (image, class), best first.
        iou_threshold: a box is suppressed by a better one of its class overlapping it by IoU > this.
        score_threshold: only boxes scoring strictly above this take part.

    Returns:
        Int64Tensor[M, 3] of ``(batch, class, box)`` triples, ordered by batch, class, then
        descending score: the layout ONNX Runtime returns.
    """
    num_batch, num_classes, _ = scores.shape
    b, c, i = (scores > score_threshold).nonzero(as_tuple=True)
    groups = b * num_classes + c
    keep = batched_nms(boxes[b, i], scores[b, c, i], groups, iou_threshold)  # descending score
    keep = keep[groups[keep].argsort(stable=True)]  # by group, score order kept inside each
    kept_groups = groups[keep]
    counts = torch.bincount(kept_groups, minlength=num_batch * num_classes)
    rank = torch.arange(keep.numel(), device=keep.device) - (torch.cumsum(counts, 0) - counts)[kept_groups]
    keep = keep[rank < max_output_boxes_per_class]
    return torch.stack((b[keep], c[keep], i[keep]), dim=1)


class MultiClassNMS(torch.autograd.Function):
    """:func:`multiclass_nms` in PyTorch, a single ``NonMaxSuppression`` node in ONNX."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, boxes: Tensor, scores: Tensor, max_output_boxes_per_class: int, iou_threshold: float,
        score_threshold: float,
    ) -> Tensor:
        return multiclass_nms(boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, max_output_boxes_per_class: int, iou_threshold: float,
                 score_threshold: float) -> Any:
        max_out = g.op("Constant", value_t=torch.tensor([max_output_boxes_per_class], dtype=torch.int64))
        iou = g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32))
        threshold = g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32))
        return g.op("NonMaxSuppression", boxes, scores, max_out, iou, threshold, center_point_box_i=0)


class InGraphPostProcess(nn.Module):
    """Raw head outputs -> fixed-size final detections, in exportable operations only.

    Args:
        anchors: ``[A, 4]`` xyxy in network-input pixels.
        image_size: ``(H, W)`` of the network input (boxes are clipped to it).
        box_coder: the model's.
        classification: ``"softmax"`` or ``"focal"`` (sigmoid), as the model was trained.
        score_threshold, nms_threshold, topk_candidates, max_detections: the PostProcessor's settings.
    """

    def __init__(
        self,
        anchors: Tensor,
        image_size: tuple[int, int],
        box_coder: BoxCoder,
        *,
        classification: str = "softmax",
        score_threshold: float = 0.01,
        nms_threshold: float = 0.55,
        topk_candidates: int = 300,
        max_detections: int = 100,
    ) -> None:
        super().__init__()
        if score_threshold < 0:
            raise ValueError("score_threshold must be >= 0 (padding scores are -1 inside the graph)")
        self.register_buffer("anchors", anchors.detach().clone().float())
        h, w = image_size
        self.register_buffer("limits", torch.tensor([w, h, w, h], dtype=torch.float32))
        self.box_coder = box_coder
        self.classification = classification
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.topk_candidates = int(topk_candidates)
        self.max_detections = int(max_detections)

    def forward(self, cls_logits: Tensor, bbox_regression: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``cls_logits [B, A, C]``, ``bbox_regression [B, A, 4]`` -> ``boxes [B, D, 4]``, ``scores [B, D]``,
        ``labels [B, D]`` int64, ``num_detections [B]`` int64 (rows past the count are zeros)."""
        num_anchors, num_classes = cls_logits.shape[1], cls_logits.shape[2]
        num_fg = int(num_classes) - 1
        if self.classification == "focal":
            scores = cls_logits[..., 1:].sigmoid()
        else:
            scores = cls_logits.softmax(dim=-1)[..., 1:]
        scores = scores.transpose(1, 2)  # [B, K, A]: NonMaxSuppression's layout
        k = min(self.topk_candidates, int(num_anchors))
        if k < int(num_anchors):
            # Only each class's k best anchors are candidates, as in the PostProcessor.
            top_scores, top_idx = scores.topk(k, dim=2)
            scores = torch.zeros_like(scores).scatter(2, top_idx, top_scores)
        boxes = self.box_coder.decode(bbox_regression, self.anchors)  # [B, A, 4]
        boxes = torch.minimum(boxes.clamp(min=0), self.limits)

        selected = MultiClassNMS.apply(boxes, scores, self.max_detections, self.nms_threshold, self.score_threshold)
        b, c, i = selected[:, 0], selected[:, 1], selected[:, 2]
        flat_scores = scores.reshape(-1)
        # Scores of the survivors in a [B, K * A] map filled with -1; one TopK per image then caps.
        index = (b * num_fg + c) * num_anchors + i
        dense = torch.full_like(flat_scores, -1.0).scatter(0, index, flat_scores[index])
        dense = dense.reshape(-1, num_fg * int(num_anchors))
        top_scores, top_idx = dense.topk(min(self.max_detections, num_fg * int(num_anchors)), dim=1)
        valid = top_scores >= 0
        labels = torch.div(top_idx, num_anchors, rounding_mode="floor") + 1
        anchor_idx = top_idx - (labels - 1) * num_anchors
        out_boxes = torch.gather(boxes, 1, anchor_idx.unsqueeze(-1).expand(-1, -1, 4))
        out_boxes = out_boxes * valid.unsqueeze(-1).to(out_boxes.dtype)
        out_scores = torch.where(valid, top_scores, torch.zeros_like(top_scores))
        out_labels = torch.where(valid, labels, torch.zeros_like(labels))
        return out_boxes, out_scores, out_labels, valid.sum(dim=1)


class NmsExportModule(nn.Module):
    """``SSDLite`` followed by :class:`InGraphPostProcess` (the graph ``--with-nms`` exports)."""

    def __init__(self, model: SSDLite) -> None:
        super().__init__()
        pp = model.post_processor
        implemented = (("topk_per", "class"), ("min_box_size", None), ("clip_before_nms", True))
        # The model's own values of what differs (not the graph's).
        unsupported = {k: getattr(pp, k) for k, v in implemented if getattr(pp, k, v) != v}
        if unsupported:
            # Better refused than a graph that silently decodes otherwise than the model.
            raise ValueError(f"the NMS graph implements top-k per class, no minimum box size and clipping before "
                             f"NMS; this model has "
                             f"{unsupported}: export without --with-nms (the runner then post-processes it exactly)")
        self.model = model
        self.postprocess = InGraphPostProcess(
            model.anchors, model.image_size, pp.box_coder, classification=pp.classification,
            score_threshold=pp.score_threshold, nms_threshold=pp.nms_threshold,
            topk_candidates=pp.topk_candidates, max_detections=pp.max_detections,
        )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``images [B, 3, H, W]`` normalised -> ``boxes, scores, labels, num_detections``."""
        return self.postprocess(*self.model(images))


def resize_model(model: SSDLite, image_size: int | tuple[int, int]) -> SSDLite:
    """The same weights at another input size: rebuilt from the config, so anchors follow the new maps."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if tuple(model.image_size) == size:
        return model
    config = dict(model.config)
    config["image_size"] = list(size)
    config["pretrained_backbone"] = "none"  # the weights come from the model itself
    resized = build_model(config)
    resized.load_state_dict(model.state_dict())
    return resized.to(model.anchors.device).eval()


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: Path
    info: OnnxModelInfo
    opset: int
    dynamic_batch: bool
    num_anchors: int
    size_bytes: int
    max_abs_diff: float | None = None  # ORT vs PyTorch on one input (raw outputs; scores with NMS)


def export_graph(
    module: nn.Module,
    example: Tensor,
    output: str | PathLike[str],
    *,
    output_names: Sequence[str],
    metadata: Mapping[str, Any],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    doc_string: str = "",
    check: bool = True,
) -> Path:
    """The one ONNX export: trace ``module`` on ``example`` (input ``images``) with the legacy
    TorchScript exporter, add ``metadata`` (:func:`detector.deploy.metadata.write_props`), check the
    graph and write it atomically (:func:`detector.files.atomic_write`; parent folders are created).

    Args:
        module: in eval mode, on the CPU, taking ``images`` ``[B, 3, H, W]``.
        example: the traced input; its batch is the graph's unless ``dynamic_batch``.
        output_names: the graph's outputs, in the module's return order.
        metadata: ``metadata_props`` entries as JSON values.
        dynamic_batch: a symbolic first dimension on the input and every output.
        check: run ``onnx.checker`` before writing.
    """
    import onnx

    names = list(output_names)
    dynamic_axes = {name: {0: "batch"} for name in [INPUT_NAME, *names]} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter's deprecation notice and tracer warnings about shape-derived Python
        # ints (the anchor and class counts, constants of the graph by design) are noise here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=names, dynamic_axes=dynamic_axes, do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = doc_string
    write_props(proto, metadata)
    if check:
        onnx.checker.check_model(proto)
    output = Path(output)
    with atomic_write(output) as tmp:
        onnx.save(proto, str(tmp))
    return output


def export_onnx(
    model: SSDLite,
    label_map: LabelMap,
    output: str | PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    with_nms: bool = False,
    verify: bool = True,
) -> ExportResult:
    """Write ``model`` as an ONNX file (legacy TorchScript exporter) with its metadata.

    Args:
        model: the detector (any device; exported on the CPU in eval mode, the caller's copy untouched).
        label_map: saved in the file so predictions carry the user's ids and names.
        output: the ``.onnx`` path (parent folders are created).
        image_size: export at another input size (``None``: the model's).
        opset: ONNX opset (>= 11).
        dynamic_batch: a symbolic batch dimension (otherwise batch 1 only).
        with_nms: decoding and NMS in the graph (see the module docstring).
        verify: check the graph with ``onnx.checker`` and compare ONNX Runtime with PyTorch on one
            input (``max_abs_diff`` of the raw outputs; with NMS, of the scores).
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be at least {MIN_OPSET} (NonMaxSuppression, ScatterElements), got {opset}")
    model = copy.deepcopy(model).cpu().eval()
    if image_size is not None:
        model = resize_model(model, image_size)
    info = detector_info(model, label_map, with_nms)
    module: nn.Module = NmsExportModule(model).eval() if with_nms else model
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2 if dynamic_batch else 1, 3, *model.image_size, generator=generator)
    output = export_graph(
        module, example, output, output_names=info.outputs, metadata=info.to_metadata(), opset=opset,
        dynamic_batch=dynamic_batch, check=verify,
        doc_string="detector SSDLite-MobileNetV2" + (" with NMS" if with_nms else " (raw outputs)"),
    )
    result = ExportResult(output, info, opset, dynamic_batch, int(model.anchors.shape[0]), output.stat().st_size)
    if verify:
        result.max_abs_diff = _compare(output, module, example, with_nms)
    return result


def _compare(path: Path, module: nn.Module, example: Tensor, with_nms: bool) -> float:
    """Largest |ORT - PyTorch| on ``example``: raw outputs, or the scores of the NMS graph."""
    from detector.deploy.onnx_runtime import create_session

    session = create_session(path, num_threads=1)
    ort_out = session.run(None, {INPUT_NAME: example.numpy()})
    with torch.no_grad():
        torch_out = [t.numpy() for t in module(example)]
    if with_nms:
        return float(np.abs(ort_out[1] - torch_out[1]).max()) if ort_out[1].size else 0.0
    return max(float(np.abs(a - b).max()) for a, b in zip(ort_out, torch_out))


def export_checkpoint(
    checkpoint: str | PathLike[str], output: str | PathLike[str], **kwargs: Any
) -> ExportResult:
    """:func:`export_onnx` of a checkpoint file (``save_checkpoint``'s or Lightning's ``*.ckpt``)."""
    model, label_map = load_checkpoint(checkpoint, map_location="cpu")
    return export_onnx(model, label_map, output, **kwargs)

