"""Helpers shared by the data tests: the shared real data, tiny files made in tmp_path."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO / ".." / "shared" / "data"


def shared(name: str) -> Path:
    """A folder of ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


def write_coco(path: Path, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
               categories: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def save_rgb(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def make_exif_rotated(path: Path) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A JPEG whose stored pixels are the displayed image rotated; EXIF orientation 6 undoes it.

    Returns the displayed image [40, 60, 3] and the red block's box (xyxy) in displayed pixels.
    """
    shown = np.zeros((40, 60, 3), np.uint8)
    box = (8, 4, 28, 20)  # x1, y1, x2, y2
    shown[box[1] : box[3], box[0] : box[2]] = (255, 0, 0)
    # Orientation 6 means "rotate 90 degrees clockwise to display", so store it rotated counter-clockwise.
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, quality=95, exif=exif)
    return shown, box
