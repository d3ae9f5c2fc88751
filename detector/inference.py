"""``Predictor``: any model file in (a checkpoint or an exported ONNX file), detections in each image's own pixels out.

    predictor = Predictor.from_checkpoint("runs/x/checkpoints/best.ckpt")   # or "model.onnx"
    det = predictor.predict("photo.jpg")          # or a PIL image, or an HxWx3 uint8 RGB array
    det["boxes"]         # np.ndarray[N, 4] float32, (x1, y1, x2, y2) in photo.jpg's pixels
    det["scores"]        # np.ndarray[N] float32, descending
    det["labels"]        # np.ndarray[N] int64, contiguous 1..K
    det["category_ids"]  # np.ndarray[N] int64, the user's COCO category ids
    det["names"]         # list[str] of N class names

The work is split in three steps; only the middle one depends on the backend:

1. **Pre-processing**: :class:`detector.deploy.preprocess.ImagePreprocessor` (resize to the network's
   ``image_size``, normalise; the same code int8 calibration uses).
2. **The runner**, one contract for every backend::

       runner(images: FloatTensor[B, 3, H, W], image_sizes: Sequence[(h, w)] | None = None) -> list[dict]
       runner.image_size  (H, W);  runner.mean, runner.std  (RGB, 0..1);  runner.device
       runner.resize  (optional: "opencv", the default, or "tf_bilinear"; see ImagePreprocessor)

   ``images`` are normalised with the runner's mean/std, on ``runner.device`` (the ONNX runner
   copies them to the CPU). Each of the ``B`` dicts holds ``"boxes"`` FloatTensor[N, 4] xyxy in the
   pixels of ``image_sizes[b]`` (mapped and clipped by
   :func:`detector.modeling.boxes.scale_boxes_to_image`; network-input pixels when ``image_sizes``
   is ``None``), ``"scores"`` FloatTensor[N] descending, ``"labels"`` Int64Tensor[N] in 1..K
   (0 is background, never returned); ``N`` may be 0. Two runners implement it:
   :class:`TorchRunner` (an ``SSDLite`` and its post-processing) and
   :class:`detector.deploy.onnx_runtime.OnnxRunner` (an exported file, on ONNX Runtime or, through
   :mod:`detector.deploy.openvino_runtime`, on OpenVINO: ``runtime="openvino"``) and
   :class:`detector.deploy.executorch_runtime.ExecuTorchRunner` (a ``.pte`` program and its sidecar).
   :func:`load_runner` picks one by file; ``SSDLite.predict`` has the same call.
3. **Filtering** (here): the user's score threshold, class filter and detection cap; labels are
   mapped to category ids and names through the ``LabelMap``.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from detector.arrays import to_numpy
from detector.checkpoint import load_checkpoint, resolve_device
from detector.deploy.onnx_runtime import OnnxRunner, open_session
from detector.deploy.preprocess import ImageInput, ImagePreprocessor, to_rgb_array
from detector.labels import LabelMap
from detector.modeling.ssdlite import SSDLite
from detector.slicing import MODEL_VIEW, FrameView, Slicing, clip_detections, letterbox, merge_views

__all__ = ["BACKENDS", "EXPORT_RUNTIMES", "ImageInput", "Predictor", "Runner", "TorchRunner", "fuse_conv_bn",
           "is_executorch_file", "is_onnx_file", "load_runner", "to_rgb_array"]

ONNX_SUFFIXES = (".onnx",)
EXECUTORCH_SUFFIXES = (".pte",)
# The runtimes of an exported .onnx file, both on the CPU.
EXPORT_RUNTIMES = ("onnxruntime", "openvino")
# The tools' --backend: "torch" runs any model file as it is; the others need an exported .onnx.
BACKENDS = {"torch": None, "onnx": "onnxruntime", "openvino": "openvino"}


class Runner(Protocol):
    """The runner contract (see the module docstring)."""

    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device

    def __call__(self, images: Tensor, image_sizes: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Tensor]]:
        ...


def is_executorch_file(path: str | PathLike[str]) -> bool:
    """An exported ExecuTorch program, by its suffix (``tools/export.py --output model.pte``)."""
    return Path(path).suffix.lower() in EXECUTORCH_SUFFIXES


def is_onnx_file(path: str | PathLike[str]) -> bool:
    """An exported ONNX model: by its suffix, or by its first byte (a protobuf ``ModelProto`` starts
    with field 1, tag ``0x08``; torch files start with ``PK`` (zip) or ``0x80`` (pickle))."""
    path = Path(path)
    if path.suffix.lower() in ONNX_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(1) == b"\x08"
    except OSError:
        return False


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
    """The PyTorch backend: ``SSDLite`` forward + its post-processing (the runner contract).

    Args:
        model: the detector; put in eval mode (and conv+BN fused when ``fuse``), in place.
        score_threshold, max_detections: replace the model's post-processing settings in this
            runner's private copy (the model's own are untouched); ``None`` keeps the model's.
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
        self.post_processor = copy.copy(model.post_processor)
        if score_threshold is not None:
            self.post_processor.score_threshold = float(score_threshold)
        if max_detections is not None:
            self.post_processor.max_detections = int(max_detections)
        self.image_size = tuple(model.image_size)
        self.mean, self.std = tuple(model.mean), tuple(model.std)
        self.resize = str(model.config.get("resize", "opencv"))
        self.view = model.config.get("view")  # how the model wants frames seen (detector.slicing.FrameView)

    @property
    def device(self) -> torch.device:
        return self.model.anchors.device

    @property
    def max_detections(self) -> int:
        return self.post_processor.max_detections

    def __call__(self, images: Tensor, image_sizes: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Tensor]]:
        with torch.inference_mode():
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            cls_logits, bbox_regression = self.model(images)
            return self.post_processor(cls_logits, bbox_regression, self.model.anchors, self.model.image_size,
                                       image_sizes, anchor_levels=self.model.anchor_levels)


def load_runner(
    path: str | PathLike[str],
    device: str | torch.device = "auto",
    *,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    fuse: bool = False,
    channels_last: bool | None = False,
    num_threads: int | None = None,
    session_options: Any = None,
    runtime: str = "onnxruntime",
) -> tuple[Runner, LabelMap]:
    """The runner of any model file, and its label map.

    An ONNX file (:func:`is_onnx_file`) runs on the CPU whatever ``device`` says, on ``runtime``
    (``"onnxruntime"`` or ``"openvino"``; ``num_threads``; ``session_options``: an ONNX Runtime
    ``SessionOptions`` or a dict of OpenVINO compile settings); anything else is loaded as a
    checkpoint, as data only (a pickle that would run code is refused with ``ValueError``), onto
    ``device`` (``"auto"``: CUDA when available). A ``.pte`` program runs on ExecuTorch's Python
    runtime (CPU, XNNPACK). ``score_threshold`` and ``max_detections`` replace the model's settings
    (``None``: the model's). ``fuse`` and ``channels_last``: see :class:`TorchRunner` (off by
    default: the model's exact numbers).
    """
    if is_executorch_file(path):
        from detector.deploy.executorch_runtime import load_executorch_runner

        runner = load_executorch_runner(path, score_threshold=score_threshold, max_detections=max_detections)
        return runner, runner.info.label_map
    if is_onnx_file(path):
        session, info = open_export(path, runtime, num_threads, session_options)
        runner = OnnxRunner(session, info, score_threshold=score_threshold, max_detections=max_detections)
        return runner, info.label_map
    model, label_map = load_checkpoint(path, map_location=resolve_device(device))
    runner = TorchRunner(model, score_threshold=score_threshold, max_detections=max_detections, fuse=fuse,
                         channels_last=channels_last)
    return runner, label_map


def open_export(path: str | PathLike[str], runtime: str = "onnxruntime", num_threads: int | None = None,
                options: Any = None) -> tuple[Any, Any]:
    """``(session, OnnxModelInfo)`` of an exported file on ``runtime`` (:data:`EXPORT_RUNTIMES`);
    ``options``: ONNX Runtime ``SessionOptions``, or OpenVINO compile settings (a dict)."""
    if runtime == "onnxruntime":
        return open_session(path, num_threads=num_threads, session_options=options)
    if runtime == "openvino":
        from detector.deploy.openvino_runtime import open_openvino_session

        return open_openvino_session(path, num_threads=num_threads, settings=options)
    raise ValueError(f"runtime must be one of {EXPORT_RUNTIMES} for an exported file, got {runtime!r}")


def _defaults_of_program(path: str | PathLike[str]) -> Mapping[str, Any]:
    """The post-processing settings an ExecuTorch program's sidecar records."""
    from detector.deploy.executorch_export import read_detector_sidecar

    return read_detector_sidecar(path).postprocess


def _candidate_limits(defaults: Mapping[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Runner settings that keep every detection the Predictor's filters may keep: the lower of the
    model's and the user's score threshold, the higher detection cap."""
    threshold, cap = kwargs.get("score_threshold"), kwargs.get("max_detections")
    return {
        "score_threshold": None if threshold is None else min(float(defaults["score_threshold"]), float(threshold)),
        "max_detections": None if cap is None else max(int(defaults["max_detections"]), int(cap)),
    }


class Predictor:
    """Detections for photos and frames, in each image's own pixels, with the user's ids and names.

    Args:
        runner: the backend (see the module docstring for its contract); its ``image_size``,
            ``mean``, ``std`` and ``device`` set the pre-processing.
        label_map: label ``1..K`` <-> category id / name.
        score_threshold: keep detections scoring at least this.
        classes: keep only these class names (``None``: all); unknown names raise ``ValueError``.
        max_detections: at most this many per image, best first (``None``: the runner's cap).
        slicing: also run on overlapping tiles of each image and merge by NMS
            (:class:`detector.slicing.Slicing`; ``None``: the whole image only). Default
            (``"model"``): the view the model records for each image's shape (its config's ``view``,
            :class:`detector.slicing.FrameView`; whole images for a model that records none).
        letterbox: pad each image (or tile) to the input's aspect ratio instead of stretching it
            (``None``: as the model records).
    """

    def __init__(
        self,
        runner: Runner,
        label_map: LabelMap,
        *,
        score_threshold: float = 0.0,
        classes: Iterable[str] | None = None,
        max_detections: int | None = None,
        slicing: Slicing | None | str = MODEL_VIEW,
        letterbox: bool | None = None,
    ) -> None:
        self.runner = runner
        self.view = FrameView.from_config(getattr(runner, "view", None)).override(slicing, letterbox)
        self.label_map = label_map
        self.device = torch.device(runner.device)
        self._preprocess = ImagePreprocessor(runner.image_size, runner.mean, runner.std, self.device,
                                             resize=getattr(runner, "resize", "opencv"))
        self.image_size, self.mean, self.std = self._preprocess.image_size, self._preprocess.mean, self._preprocess.std
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
    def from_model(cls, model: SSDLite, label_map: LabelMap, *, fuse: bool = True, **kwargs: Any) -> Predictor:
        """Wrap an in-memory ``SSDLite`` (moved nowhere: the Predictor uses the model's device;
        fused in place when ``fuse``). ``kwargs``: the Predictor's options."""
        runner = TorchRunner(model, fuse=fuse, **_candidate_limits(vars(model.post_processor), kwargs))
        return cls(runner, label_map, **kwargs)

    @classmethod
    def from_checkpoint(
        cls, path: str | PathLike[str], device: str | torch.device = "cpu", *, fuse: bool = True,
        runtime: str = "onnxruntime", **kwargs: Any
    ) -> Predictor:
        """Load any model file: a checkpoint (``save_checkpoint``'s or Lightning's ``*.ckpt``, as data
        only) onto ``device`` (``"auto"``: CUDA when available), an exported ``.onnx``
        (:meth:`from_onnx` on ``runtime``, on the CPU) or an ExecuTorch ``.pte`` program (on the CPU).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a detector checkpoint or export, or needs code to unpickle
                (refused: loading uses ``torch.load(weights_only=True)``); the message says which.
        """
        if is_executorch_file(path) or is_onnx_file(path):
            if str(device) not in ("cpu", "auto"):
                raise ValueError(f"{path} is an exported model file: it runs on the CPU (device={device!r})")
            if is_executorch_file(path):
                runner, label_map = load_runner(path, **_candidate_limits(_defaults_of_program(path), kwargs))
                return cls(runner, label_map, **kwargs)
            return cls.from_onnx(path, runtime=runtime, **kwargs)
        model, label_map = load_checkpoint(path, map_location=resolve_device(device))
        return cls.from_model(model, label_map, fuse=fuse, **kwargs)

    @classmethod
    def from_onnx(
        cls, path: str | PathLike[str], *, runtime: str = "onnxruntime", num_threads: int | None = None,
        session_options: Any = None, **kwargs: Any
    ) -> Predictor:
        """An exported file (``tools/export.py``'s) on the CPU with ``runtime`` (``"onnxruntime"`` or
        ``"openvino"``); its metadata gives the label map, input size and normalisation.
        ``num_threads``, ``session_options``: see :func:`open_export`; ``kwargs``: the Predictor's options."""
        session, info = open_export(path, runtime, num_threads, session_options)
        runner = OnnxRunner(session, info, **_candidate_limits(info.postprocess, kwargs))
        return cls(runner, info.label_map, **kwargs)

    @classmethod
    def load(cls, path: str | PathLike[str], backend: str = "torch", device: str | torch.device = "cpu",
             **kwargs: Any) -> Predictor:
        """What the tools' ``--backend`` means (:data:`BACKENDS`): ``"torch"``: :meth:`from_checkpoint`
        on ``device`` (an ``.onnx`` then runs on ONNX Runtime); ``"onnx"`` (ONNX Runtime) or
        ``"openvino"``: :meth:`from_onnx` on that runtime, for an exported file only."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        runtime = BACKENDS[backend]
        if runtime is None:
            return cls.from_checkpoint(path, device, **kwargs)
        if not is_onnx_file(path):
            raise ValueError(f"--backend {backend} runs an exported .onnx file and {path} is not one "
                             "(export it with tools/export.py)")
        return cls.from_onnx(path, runtime=runtime, **kwargs)

    # --- inference ---------------------------------------------------------------------------

    def preprocess(self, images: Sequence[np.ndarray]) -> Tensor:
        """``HxWx3`` uint8 RGB arrays -> ``FloatTensor[B, 3, H, W]`` normalised, contiguous, on ``device``."""
        return self._preprocess(images)

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
        slicings = [self.view.slicing_for(*array.shape[:2]) for array in arrays]
        if all(slicing is None for slicing in slicings):  # one batch of whole images
            outputs = self._run_views(arrays)
        else:
            outputs = [self._run_views([array])[0] if slicing is None else self._sliced(array, slicing)
                       for array, slicing in zip(arrays, slicings)]
        return [self._finish(out) for out in outputs]

    @property
    def slicing(self) -> Slicing | None:
        """The slicing of the model's view (applied to images at least ``view.slice_min_aspect`` wide)."""
        return self.view.slicing

    @property
    def letterbox(self) -> bool:
        return self.view.letterbox

    def _run_views(self, views: Sequence[np.ndarray]) -> list[Mapping[str, Any]]:
        """The runner on whole views (images or tiles), boxes in each view's pixels."""
        if self.letterbox:  # padded at the bottom and right: boxes keep the view's coordinates
            padded = [letterbox(view, self.image_size, self.mean) for view in views]
            outputs = self.runner(self.preprocess(padded), [p.shape[:2] for p in padded])
            outputs = [clip_detections(out, view.shape[:2]) for out, view in zip(outputs, views)]
        else:
            outputs = self.runner(self.preprocess(views), [view.shape[:2] for view in views])
        if len(outputs) != len(views):
            raise RuntimeError(f"the runner returned {len(outputs)} results for {len(views)} images")
        return outputs

    def _sliced(self, image: np.ndarray, slicing: Slicing) -> dict[str, Any]:
        """One image's detections from its whole frame and its tiles, merged."""
        windows = slicing.windows(image.shape[0], image.shape[1], self.image_size)
        views = [image[y0:y1, x0:x1] for x0, y0, x1, y1 in windows]
        outputs = self._run_views(views)
        # The merged frame keeps as many as one view may (the runner's cap), or the user's.
        cap = self.max_detections if self.max_detections is not None else getattr(self.runner, "max_detections", None)
        return merge_views(outputs, windows, image.shape[:2], slicing.merge_iou, cap)

    def _finish(self, out: Mapping[str, Any]) -> dict[str, Any]:
        """Runner output (original pixels) -> the public result, filtered, with ids and names."""
        boxes = to_numpy(out["boxes"], np.float32, (4,))
        scores = to_numpy(out["scores"], np.float32)
        labels = to_numpy(out["labels"], np.int64)
        keep = (scores >= self.score_threshold) & self._keep_label[labels]
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(-scores[idx], kind="stable")][: self.max_detections]
        labels = labels[idx]
        return {
            "boxes": boxes[idx],
            "scores": scores[idx],
            "labels": labels,
            "category_ids": self._category_ids[labels],
            "names": [self._names[i] for i in labels],
        }

    def __repr__(self) -> str:
        runner = type(self.runner).__name__
        return (f"Predictor(runner={runner}, classes={list(self.label_map.names)}, image_size={self.image_size}, "
                f"device={self.device}, score_threshold={self.score_threshold})")
