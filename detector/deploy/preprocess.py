"""The network input every runtime is fed: any image in, a resized, normalised batch out.

Shared by :class:`detector.inference.Predictor` (PyTorch and ONNX Runtime alike) and int8
calibration (:mod:`detector.deploy.quantize`), so calibration sees exactly what inference feeds:

- each image is resized to the network's ``image_size`` with ``cv2.resize(INTER_LINEAR)`` (no
  aspect-ratio preservation, exactly like training's eval pipeline), or, for models converted from
  TensorFlow (``resize="tf_bilinear"``), as their graphs do: TF1's bilinear resize of the float image
  (:func:`tf_bilinear_resize`);
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

from detector.constants import RESIZES
from detector.data.io import load_image
from detector.threads import single_threaded

__all__ = ["ImageInput", "ImagePreprocessor", "tf_bilinear_resize", "to_rgb_array"]

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


def _tf_source_coordinates(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF1's legacy scaler (``align_corners=False``, ``half_pixel_centers=False``): output pixel ``i``
    reads input coordinate ``i * (in / out)``, in float32; its lower and upper neighbours and the weight."""
    scale = np.float32(in_size) / np.float32(out_size)
    coords = np.arange(out_size, dtype=np.float32) * scale
    floor = np.floor(coords)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(coords).astype(np.int64), in_size - 1)
    return lower, upper, (coords - floor).astype(np.float32)


def tf_bilinear_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``tf.compat.v1.image.resize_bilinear(align_corners=False)`` of an ``HxWx3`` image to ``(h, w)``,
    as TF Object Detection API graphs resize their input: on float pixels, with no half-pixel offset
    (output pixel ``(i, j)`` samples input ``(i * H / h, j * W / w)``) and no rounding back to uint8.

    Written by hand: OpenCV, PIL and ``torch.nn.functional.interpolate`` all sample at half-pixel
    centres, which shifts the image by up to half an input pixel against TF's.

    Returns:
        ``np.ndarray[h, w, 3]`` float32 in 0..255.

    Example: a 1x4 row ``[0, 10, 20, 30]`` resized to width 3 samples 0, 1.333 and 2.667: ``[0, 13.33, 26.67]``.
    """
    h, w = size
    y0, y1, dy = _tf_source_coordinates(h, image.shape[0])
    x0, x1, dx = _tf_source_coordinates(w, image.shape[1])
    pixels = image.astype(np.float32)
    top, bottom = pixels[y0], pixels[y1]  # [h, W, 3]
    dx = dx[None, :, None]
    # TF's order of operations: lerp along x on both rows, then along y.
    top = top[:, x0] + (top[:, x1] - top[:, x0]) * dx
    bottom = bottom[:, x0] + (bottom[:, x1] - bottom[:, x0]) * dx
    return top + (bottom - top) * dy[:, None, None]


class ImagePreprocessor:
    """``HxWx3`` uint8 RGB arrays -> ``FloatTensor[B, 3, H, W]`` normalised, contiguous, on ``device``.

    Args:
        image_size: ``(H, W)`` of the network input (an int for square).
        mean, std: per-channel RGB normalisation in 0..1, the model's.
        device: where the batch is made.
        resize: ``"opencv"`` (``cv2.resize(INTER_LINEAR)`` on uint8, as training does) or
            ``"tf_bilinear"`` (:func:`tf_bilinear_resize`, for models converted from TensorFlow).
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        resize: str = "opencv",
    ) -> None:
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
        self.resize = resize
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
        h, w = self.image_size
        if self.resize == "tf_bilinear":
            resized = np.stack([tf_bilinear_resize(img, (h, w)) for img in images])
        else:
            resized = self._opencv_resize(images)
        # uint8 crosses to the device (4x less traffic than float); the NHWC -> NCHW copy happens in
        # the same addcmul that normalises (its output is allocated contiguous).
        batch = torch.from_numpy(resized).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        out = torch.empty((len(images), 3, h, w), dtype=torch.float32, device=self.device)
        # One thread: at a few frames the addcmul is too small to gain from more (0.78 -> 0.50 ms for the
        # whole call at 320 px, 2 threads); OpenCV keeps its own threads for the resize.
        with single_threaded():
            return torch.addcmul(self._shift, batch, self._scale, out=out)

    def _opencv_resize(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import cv2

        h, w = self.image_size
        resized = np.empty((len(images), h, w, 3), dtype=np.uint8)
        for i, img in enumerate(images):
            if img.shape[:2] == (h, w):
                resized[i] = img
            else:
                cv2.resize(img, (w, h), dst=resized[i], interpolation=cv2.INTER_LINEAR)
        return resized
