"""The network input equals the plain computation (resize, /255, minus mean, over std, CHW) in float64."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detector.deploy.preprocess import ImagePreprocessor

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
