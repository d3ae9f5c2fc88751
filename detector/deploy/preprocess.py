"""The network input every runtime is fed: any image in, a resized, normalised batch out.

Shared by :class:`detector.inference.Predictor` (PyTorch and ONNX Runtime alike) and int8
calibration (:mod:`detector.deploy.quantize`), so calibration sees exactly what inference feeds:

- each image is resized to the network's ``image_size`` with ``cv2.resize(INTER_LINEAR)`` (no
  aspect-ratio preservation, exactly like training's eval pipeline);
- the batch is stacked as uint8, moved to the device once, and normalised with
  ``(x / 255 - mean) / std`` as a single ``addcmul`` in channels-first layout.

OpenCV is imported on first use, so importing this module stays light.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from os import PathLike
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from detector.data.io import load_image
from detector.threads import single_threaded

__all__ = ["ImageInput", "ImagePreprocessor", "to_rgb_array"]

ImageInput = Union[str, "PathLike[str]", Image.Image, np.ndarray]


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


class ImagePreprocessor:
    """``HxWx3`` uint8 RGB arrays -> ``FloatTensor[B, 3, H, W]`` normalised, contiguous, on ``device``.

    Args:
        image_size: ``(H, W)`` of the network input (an int for square).
        mean, std: per-channel RGB normalisation in 0..1, the model's.
        device: where the batch is made.
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
    ) -> None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.image_size = (int(h), int(w))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.device = torch.device(device)
        # (x / 255 - mean) / std == x * scale + shift: one addcmul per batch.
        std_t = torch.tensor(self.std, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-torch.tensor(self.mean, dtype=torch.float32) / std_t).view(1, 3, 1, 1).to(self.device)

    def __call__(self, images: Sequence[np.ndarray]) -> Tensor:
        import cv2

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
        # One thread: at a few frames the addcmul is too small to gain from more (0.78 -> 0.50 ms for the
        # whole call at 320 px, 2 threads); OpenCV keeps its own threads for the resize.
        with single_threaded():
            return torch.addcmul(self._shift, batch, self._scale, out=out)
