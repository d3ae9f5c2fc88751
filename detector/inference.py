"""``Predictor``: a checkpoint (or an exported ONNX file) in, detections in each image's own pixels out.

    predictor = Predictor.from_checkpoint("runs/x/checkpoints/best.ckpt", device="cpu")
    det = predictor.predict("photo.jpg")          # or a PIL image, or an HxWx3 uint8 RGB array
    det["boxes"]         # np.ndarray[N, 4] float32, (x1, y1, x2, y2) in photo.jpg's pixels
    det["scores"]        # np.ndarray[N] float32, descending
    det["labels"]        # np.ndarray[N] int64, contiguous 1..K
    det["category_ids"]  # np.ndarray[N] int64, the user's COCO category ids
    det["names"]         # list[str] of N class names

The work is split in three steps; only the middle one depends on the backend:

1. **Pre-processing** (here, shared): each image is resized to the network's ``image_size`` with
   ``cv2.resize(INTER_LINEAR)`` (no aspect-ratio preservation, exactly like training's eval
   pipeline), the batch is stacked as uint8, moved to the device once, and normalised with
   ``(x / 255 - mean) / std`` as a single ``addcmul`` in channels-first layout.
2. **The runner** (pluggable): ``runner(images) -> list[dict]``.
3. **Post-processing** (here, shared): boxes are scaled from network-input pixels to each
   original image's size and clipped to it; the score threshold, class filter and detection cap
   are applied; labels are mapped to category ids and names through the ``LabelMap``.

Runner contract (what ``detector.deploy.onnx_runtime.load_onnx_predictor`` implements)::

    runner(images: torch.FloatTensor[B, 3, H, W]) -> list[dict]   # len == B

- ``images``: normalised with the model's mean/std, contiguous, on ``predictor.device``
  (``"cpu"`` for ONNX: ``images.numpy()`` is the ONNX input as is); ``(H, W)`` is the
  ``image_size`` the Predictor was built with.
- each dict: ``"boxes"`` ``[N, 4]`` xyxy in **network-input pixels** (the ``H x W`` frame, not
  rescaled to the original image), ``"scores"`` ``[N]`` in 0..1, ``"labels"`` ``[N]`` ints in
  1..K (0 is background and never returned); torch tensors (any device) or numpy arrays;
  ``N`` may be 0. The runner does its own decoding and NMS (e.g. ``SSDLite.postprocess`` on the
  ONNX outputs ``cls_logits``/``bbox_regression``); it should keep candidates at least down to a
  low score (the model's own ``score_threshold``, 0.01 by default): the Predictor applies the
  user's ``score_threshold`` after it.

An ONNX backend then only needs::

    def load_onnx_predictor(path, **kwargs) -> Predictor:
        session, label_map, image_size, mean, std = ...   # read from the file's metadata
        return Predictor(OnnxRunner(session), label_map, image_size, mean, std, **kwargs)
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from detector.checkpoint import load_checkpoint
from detector.data.io import load_image
from detector.labels import LabelMap
from detector.modeling.ssdlite import SSDLite
from detector.modeling.postprocess import PostProcessor

__all__ = ["ImageInput", "Predictor", "Runner", "TorchRunner", "fuse_conv_bn", "to_rgb_array"]

ImageInput = Union[str, "PathLike[str]", Image.Image, np.ndarray]
# runner(FloatTensor[B, 3, H, W] normalised) -> B dicts {"boxes" [N, 4] xyxy input pixels, "scores", "labels"}
Runner = Callable[[Tensor], list[dict[str, Any]]]

ONNX_SUFFIXES = (".onnx",)


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """Any accepted image -> ``np.ndarray[H, W, 3]`` uint8 RGB.

    A path is decoded with :func:`detector.data.io.load_image` (EXIF-transposed; grey, RGBA,
    palette, CMYK converted; raises ``ImageReadError`` naming the file). A PIL image gets the same
    EXIF transpose and RGB conversion, so ``predict(path)`` and ``predict(Image.open(path))`` agree.
    An array must be uint8 ``HxWx3`` RGB; ``HxW`` grey and ``HxWx4`` RGBA are accepted too.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"expected a uint8 image array, got dtype {image.dtype}")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] == 4:
            return image[:, :, :3]
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        raise ValueError(f"expected an HxWx3 RGB (or HxW, HxWx4) array, got shape {image.shape}")
    raise TypeError(f"expected a path, a PIL image or a numpy array, got {type(image).__name__}")


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every ``Conv2d`` directly followed by a ``BatchNorm2d`` inside an ``nn.Sequential`` into
    the conv (the BN becomes ``Identity``), in place; ``module`` must be in eval mode.

    All of SSDLite's conv+BN pairs are such pairs (``Conv2dNormActivation``, the inverted residual
    blocks' projection), so module names, and hence ``forward``, stay unchanged.
    """
    if module.training:
        raise ValueError("fuse_conv_bn needs a module in eval mode (BN running statistics)")
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return module


class TorchRunner:
    """The PyTorch backend: ``SSDLite`` forward + its post-processing, boxes in network-input pixels.

    Args:
        model: the detector; put in eval mode (and conv+BN fused when ``fuse``).
        score_threshold, max_detections: override the model's post-processing defaults (a higher
            threshold also makes NMS cheaper); ``None`` keeps the model's.
        fuse: fold BatchNorm into the convolutions (same outputs to ~1e-5, fewer ops).
        channels_last: run the network in ``torch.channels_last`` memory format (weights converted
            in place, each input batch converted on entry); ``None``: on the CPU only, where oneDNN's
            depthwise and 1x1 convolutions are 1.5-3x faster in it (``benchmarks/latency.py``). Same
            outputs to float rounding.
    """

    def __init__(
        self,
        model: SSDLite,
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        fuse: bool = True,
        channels_last: bool | None = None,
    ) -> None:
        self.model = model.eval()
        if fuse:
            fuse_conv_bn(self.model)
        if channels_last is None:
            channels_last = self.model.anchors.device.type == "cpu"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        pp = model.post_processor
        # A private copy: the Predictor's options must not change the model others may share.
        self.post_processor = PostProcessor(
            pp.box_coder,
            score_threshold=pp.score_threshold if score_threshold is None else min(pp.score_threshold, score_threshold),
            nms_threshold=pp.nms_threshold,
            topk_candidates=pp.topk_candidates,
            max_detections=pp.max_detections if max_detections is None else max(pp.max_detections, max_detections),
            classification=pp.classification,
        )

    @property
    def device(self) -> torch.device:
        return self.model.anchors.device

    def __call__(self, images: Tensor) -> list[dict[str, Tensor]]:
        with torch.inference_mode():
            cls_logits, bbox_regression = self.model(images.contiguous(memory_format=self.memory_format))
            return self.post_processor(cls_logits, bbox_regression, self.model.anchors, self.model.image_size)


def _numpy(x: Any, dtype: type, tail: tuple[int, ...] = ()) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(-1, *tail)


class Predictor:
    """Detections for photos and frames, in each image's own pixels, with the user's ids and names.

    Args:
        runner: the backend (see the module docstring for its contract).
        label_map: label ``1..K`` <-> category id / name.
        image_size: ``(H, W)`` of the network input (an int for square).
        mean, std: per-channel RGB normalisation in 0..1, the model's.
        device: where the input batch is put for the runner.
        score_threshold: keep detections scoring at least this.
        classes: keep only these class names (``None``: all); unknown names raise ``ValueError``.
        max_detections: at most this many per image, best first (``None``: the runner's cap).
    """

    def __init__(
        self,
        runner: Runner,
        label_map: LabelMap,
        image_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.0,
        classes: Iterable[str] | None = None,
        max_detections: int | None = None,
    ) -> None:
        self.runner = runner
        self.label_map = label_map
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.image_size = (int(h), int(w))
        self.device = torch.device(device)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # (x / 255 - mean) / std == x * scale + shift: one addcmul per batch.
        std_t = torch.tensor(self.std, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-torch.tensor(self.mean, dtype=torch.float32) / std_t).view(1, 3, 1, 1).to(self.device)
        self.score_threshold = float(score_threshold)
        self.max_detections = max_detections
        self.classes: frozenset[str] | None = None
        if classes is not None:
            wanted = [str(c) for c in classes]
            unknown = sorted(set(wanted) - set(label_map.names))
            if unknown:
                raise ValueError(f"unknown class name(s) {unknown}; the model knows {list(label_map.names)}")
            self.classes = frozenset(wanted)
        self._category_ids = np.asarray((0, *label_map.category_ids), dtype=np.int64)  # index = label
        self._names = ("__background__", *label_map.names)
        self._keep_label = np.ones(len(self._names), dtype=bool)
        if self.classes is not None:
            self._keep_label = np.array([n in self.classes for n in self._names], dtype=bool)
            self._keep_label[0] = False

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_model(
        cls, model: SSDLite, label_map: LabelMap, *, fuse: bool = True, **kwargs: Any
    ) -> "Predictor":
        """Wrap an in-memory ``SSDLite`` (moved nowhere: the Predictor uses the model's device)."""
        runner = TorchRunner(model, score_threshold=kwargs.get("score_threshold"),
                             max_detections=kwargs.get("max_detections"), fuse=fuse)
        kwargs.setdefault("device", runner.device)
        return cls(runner, label_map, model.image_size, model.mean, model.std, **kwargs)

    @classmethod
    def from_checkpoint(
        cls, path: str | PathLike[str], device: str | torch.device = "cpu", *, fuse: bool = True, **kwargs: Any
    ) -> "Predictor":
        """Load a checkpoint (``save_checkpoint``'s or Lightning's ``*.ckpt``) as data only.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a detector checkpoint, or needs code to unpickle (refused:
                loading uses ``torch.load(weights_only=True)``); the message says which.
        """
        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model, label_map = load_checkpoint(path, map_location=device)
        return cls.from_model(model, label_map, fuse=fuse, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | PathLike[str], **kwargs: Any) -> "Predictor":
        """Load an exported ONNX file through ``detector.deploy.onnx_runtime.load_onnx_predictor``."""
        try:
            backend = importlib.import_module("detector.deploy.onnx_runtime")
        except ModuleNotFoundError as err:
            if err.name not in ("detector.deploy.onnx_runtime",):
                raise  # the backend exists but one of its own dependencies is missing: say that
            raise RuntimeError(
                "the ONNX backend (detector.deploy.onnx_runtime) is not available in this version; "
                "use a PyTorch checkpoint (--backend torch)"
            ) from err
        return backend.load_onnx_predictor(path, **kwargs)

    @classmethod
    def from_path(cls, path: str | PathLike[str], **kwargs: Any) -> "Predictor":
        """``from_onnx`` for ``*.onnx`` files, ``from_checkpoint`` for anything else."""
        if Path(path).suffix.lower() in ONNX_SUFFIXES:
            kwargs.pop("device", None)
            return cls.from_onnx(path, **kwargs)
        return cls.from_checkpoint(path, **kwargs)

    # --- inference ---------------------------------------------------------------------------

    def preprocess(self, images: Sequence[np.ndarray]) -> Tensor:
        """``HxWx3`` uint8 RGB arrays -> ``FloatTensor[B, 3, H, W]`` normalised, contiguous, on ``device``."""
        h, w = self.image_size
        resized = np.empty((len(images), h, w, 3), dtype=np.uint8)
        for i, img in enumerate(images):
            if img.shape[:2] == (h, w):
                resized[i] = img
            else:
                cv2.resize(img, (w, h), dst=resized[i], interpolation=cv2.INTER_LINEAR)
        # uint8 crosses to the device (4x less traffic than float); the NHWC -> NCHW copy happens in
        # the same addcmul that normalises (its output is allocated contiguous).
        batch = torch.from_numpy(resized).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        out = torch.empty((len(images), 3, h, w), dtype=torch.float32, device=self.device)
        return torch.addcmul(self._shift, batch, self._scale, out=out)

    def predict(self, image: ImageInput) -> dict[str, Any]:
        """Detections of one image (a path, a PIL image or an ``HxWx3`` uint8 RGB array).

        Returns:
            ``{"boxes": np.ndarray[N, 4] float32 xyxy in the image's pixels, "scores": [N] float32,
            "labels": [N] int64 in 1..K, "category_ids": [N] int64, "names": list[str]}``, best first.
        """
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageInput]) -> list[dict[str, Any]]:
        """Detections of many images (any mix of sizes and input kinds) in one network forward."""
        arrays = [to_rgb_array(im) for im in images]
        if not arrays:
            return []
        outputs = self.runner(self.preprocess(arrays))
        if len(outputs) != len(arrays):
            raise RuntimeError(f"the runner returned {len(outputs)} results for {len(arrays)} images")
        return [self._finish(out, arr.shape[:2]) for out, arr in zip(outputs, arrays)]

    def _finish(self, out: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
        """Runner output (network-input pixels) -> the public result in original pixels."""
        boxes = _numpy(out["boxes"], np.float32, (4,))
        scores = _numpy(out["scores"], np.float32)
        labels = _numpy(out["labels"], np.int64)
        keep = (scores >= self.score_threshold) & self._keep_label[labels]
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(-scores[idx], kind="stable")][: self.max_detections]
        boxes, scores, labels = boxes[idx], scores[idx], labels[idx]
        h, w = size
        in_h, in_w = self.image_size
        boxes = boxes * np.array([w / in_w, h / in_h, w / in_w, h / in_h], dtype=np.float32)
        boxes = np.clip(boxes, 0.0, np.array([w, h, w, h], dtype=np.float32)).astype(np.float32)
        return {
            "boxes": boxes,
            "scores": scores,
            "labels": labels,
            "category_ids": self._category_ids[labels],
            "names": [self._names[i] for i in labels],
        }

    def __repr__(self) -> str:
        runner = type(self.runner).__name__
        return (f"Predictor(runner={runner}, classes={list(self.label_map.names)}, image_size={self.image_size}, "
                f"device={self.device}, score_threshold={self.score_threshold})")
