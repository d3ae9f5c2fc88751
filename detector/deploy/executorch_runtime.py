"""ExecuTorch backend: run an exported ``.pte`` program (XNNPACK) with its sidecar and nothing else.

The program (:mod:`detector.deploy.executorch_export`) has one method, ``forward``::

    images           float32[1, 3, H, W]  normalised (:mod:`detector.deploy.preprocess`)
    cls_logits       float32[1, A, C]
    bbox_regression  float32[1, A, 4]

and its sidecar ``model.pte.json`` the ONNX export's metadata (label map, input size, normalisation,
recipe), read by :func:`detector.deploy.executorch_export.read_detector_sidecar`.

:class:`ExecuTorchRunner` follows the runner contract of :mod:`detector.inference` (the same call as
``TorchRunner`` and :class:`detector.deploy.onnx_runtime.OnnxRunner`): a batch of ``B`` images runs in
chunks of the program's largest batch (one image, or up to 8 for ``tools/export.py --dynamic-batch``:
the views of a sliced frame in one call), then the raw outputs are decoded as the ONNX runner decodes them, by the
model's own post-processing and anchors rebuilt from the recipe
(:meth:`~detector.deploy.metadata.OnnxModelInfo.post_processor`, ``.anchors``, ``.anchor_levels``), and
boxes are mapped to original pixels by :func:`detector.modeling.boxes.scale_boxes_to_image` (inside the
post-processor).

It uses ExecuTorch's public Python runtime, ``executorch.runtime.Runtime.get().load_program(path)
.load_method("forward").execute([images])``; XNNPACK's thread pool is the runtime's (one thread per core).

    runner = load_executorch_runner("model.pte")
    runner(images, image_sizes=[(480, 640)])[0]["boxes"]
"""
from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detector.deploy.executorch_export import read_detector_sidecar
from detector.deploy.metadata import OnnxModelInfo
from detector.deploy.onnx_runtime import ExportedRunner

__all__ = ["ExecuTorchRunner", "load_executorch_runner", "load_program_method"]


def load_program_method(path: str | PathLike[str], method: str = "forward") -> Any:
    """``executorch.runtime``'s ``Method`` of an exported program (``FileNotFoundError`` naming a missing
    file; ``ValueError`` naming a file the runtime cannot load)."""
    from executorch.runtime import Runtime

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ExecuTorch program not found: {path}")
    try:
        program = Runtime.get().load_program(path)
    except RuntimeError as err:
        raise ValueError(f"{path}: not a loadable ExecuTorch program ({err})") from err
    if method not in program.method_names:
        raise ValueError(f"{path}: no method {method!r} (it has {sorted(program.method_names)})")
    return program.load_method(method)


class ExecuTorchRunner(ExportedRunner):
    """The ExecuTorch backend, following :mod:`detector.inference`'s runner contract (``device`` is
    always the CPU: inputs on another device are copied).

    Args:
        method: the program's ``forward`` (``executorch.runtime.Method``), batch 1, raw outputs.
        info: its metadata (the sidecar's).
        score_threshold: keep detections scoring above this (``None``: the exported model's).
        max_detections: detections per image (``None``: the exported model's).
    """

    def __init__(
        self,
        method: Any,
        info: OnnxModelInfo,
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> None:
        if info.with_nms:
            raise ValueError("ExecuTorch programs return raw outputs; this metadata says the graph has NMS")
        meta = method.metadata
        expected = (3, *info.image_size)
        shape = tuple(meta.input_tensor_meta(0).sizes())  # a dynamic batch reports its upper bound
        if shape[1:] != expected or shape[0] < 1 or meta.num_outputs() != len(info.outputs):
            raise ValueError(f"the program takes {list(shape)} and returns {meta.num_outputs()} outputs; its metadata "
                             f"says [B, {', '.join(map(str, expected))}] and {list(info.outputs)}")
        self.max_batch = int(shape[0])
        super().__init__(info, score_threshold, max_detections)
        self.method = method
        self.post_processor = info.post_processor(self.score_threshold, self.max_detections)
        self.anchors, self.anchor_levels = info.anchors(), info.anchor_levels()

    def run(self, images: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """``cls_logits [B, A, C]``, ``bbox_regression [B, A, 4]`` for ``images [B, 3, H, W]`` normalised."""
        batch = torch.as_tensor(images).detach().to("cpu", torch.float32)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, *self.info.image_size):
            raise ValueError(f"expected images [B, 3, {self.info.image_size[0]}, {self.info.image_size[1]}], "
                             f"got {list(batch.shape)}")
        # A program takes batches of up to max_batch images (1 unless exported with a dynamic batch):
        # the views of a sliced frame run in one call when they fit.
        outputs = [self.method.execute([chunk.contiguous()]) for chunk in batch.split(self.max_batch)]
        cls_logits, bbox_regression = (torch.cat(parts) for parts in zip(*outputs))
        return cls_logits, bbox_regression

    def __call__(
        self, images: Tensor | np.ndarray, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[dict[str, Tensor]]:
        """Detections per image: ``boxes [N, 4]`` xyxy in network-input pixels (or in ``image_sizes``
        pixels, ``(h, w)`` each, when given), ``scores [N]`` descending, ``labels [N]`` in 1..K."""
        cls_logits, bbox_regression = self.run(images)
        return self.post_processor(cls_logits, bbox_regression, self.anchors, self.info.image_size, image_sizes,
                                   anchor_levels=self.anchor_levels)


def load_executorch_runner(
    path: str | PathLike[str],
    *,
    score_threshold: float | None = None,
    max_detections: int | None = None,
) -> ExecuTorchRunner:
    """An :class:`ExecuTorchRunner` for an exported program and its sidecar (``runner.info.label_map``:
    the labels). ``FileNotFoundError`` names a missing program or sidecar; ``ValueError`` an invalid one."""
    info = read_detector_sidecar(path)  # checks the program exists, then its sidecar
    return ExecuTorchRunner(load_program_method(path), info, score_threshold=score_threshold,
                            max_detections=max_detections)
