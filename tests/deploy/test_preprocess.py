"""The network input equals the plain computation (resize, /255, minus mean, over std, CHW) in float64."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detector.deploy.preprocess import ImagePreprocessor, tf_bilinear_resize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def plain(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    x = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64) / 255.0
    return ((x - np.array(MEAN)) / np.array(STD)).transpose(2, 0, 1)


@pytest.mark.parametrize("size_hw", [(192, 256), (64, 64)])
def test_batch_equals_the_plain_computation(size_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    # Odd sizes, one already at the input size (no resize), and a channel-distinct image (RGB order).
    images = [rng.integers(0, 256, (233, 311, 3), dtype=np.uint8),
              rng.integers(0, 256, (*size_hw, 3), dtype=np.uint8),
              np.dstack([np.full((50, 70), v, np.uint8) for v in (10, 128, 250)])]
    expected = np.stack([plain(img, size_hw) for img in images])
    got = ImagePreprocessor(size_hw, MEAN, STD)(images)
    assert got.shape == (3, 3, *size_hw) and got.dtype == torch.float32 and got.is_contiguous()
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)


# --- TF's bilinear resize ----------------------------------------------------------------------------


def test_tf_bilinear_resize_by_hand():
    """TF1's legacy sampling (no half-pixel offset): output j reads input j * in / out."""
    row = np.array([[[0, 0, 0], [10, 10, 10], [20, 20, 20], [30, 30, 30]]], dtype=np.uint8)  # 1x4
    down = tf_bilinear_resize(row, (1, 3))[0, :, 0]  # samples 0, 4/3, 8/3
    np.testing.assert_allclose(down, [0.0, 13.333333, 26.666666], rtol=0, atol=1e-4)
    up = tf_bilinear_resize(row, (1, 8))[0, :, 0]  # samples 0, 0.5, ..., 3.5 (the last clamps to 30)
    np.testing.assert_allclose(up, [0, 5, 10, 15, 20, 25, 30, 30], rtol=0, atol=1e-5)
    column = np.array([[[0] * 3], [[100] * 3]], dtype=np.uint8)  # 2x1: rows lerp the same way
    np.testing.assert_allclose(tf_bilinear_resize(column, (4, 1))[:, 0, 0], [0, 50, 100, 100], atol=1e-5)
    assert tf_bilinear_resize(row, (1, 4)).dtype == np.float32
    np.testing.assert_array_equal(tf_bilinear_resize(row, (1, 4)), row.astype(np.float32))  # same size: identity


def test_preprocessor_tf_bilinear_normalises_float_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    out = ImagePreprocessor((20, 30), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize="tf_bilinear")([image])
    expected = tf_bilinear_resize(image, (20, 30)) * (2 / 255) - 1  # TF OD API's [-1, 1] input
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-6)
    opencv = ImagePreprocessor((20, 30), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))([image])
    assert float((opencv - out).abs().max()) > 0.05  # a different resize
    with pytest.raises(ValueError, match="resize"):
        ImagePreprocessor(20, (0.5,) * 3, (0.5,) * 3, resize="area")
