from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_helpers import make_exif_rotated
from detector.data.io import ImageReadError, image_size, load_image


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    Image.fromarray(np.full((7, 9), 77, np.uint8), mode="L").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.shape == (7, 9, 3) and img.dtype == np.uint8
    assert (img == 77).all()


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    Image.new("RGBA", (5, 4), (10, 20, 30, 128)).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (4, 5, 3)
    assert (img.reshape(-1, 3) == [10, 20, 30]).all()


def test_palette_is_expanded(tmp_path: Path) -> None:
    im = Image.new("P", (6, 3))
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    im.putpixel((2, 1), 1)
    im.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    assert img.shape == (3, 6, 3)
    assert img[1, 2].tolist() == [200, 10, 10] and img[0, 0].tolist() == [0, 0, 0]


def test_cmyk_is_converted(tmp_path: Path) -> None:
    # Pure cyan-free magenta+yellow is red: C=0, M=255, Y=255, K=0 -> RGB (255, 0, 0).
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    img = load_image(tmp_path / "c.tif")
    assert img.shape == (4, 4, 3)
    assert (img.reshape(-1, 3) == [255, 0, 0]).all()


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    shown, (x1, y1, x2, y2) = make_exif_rotated(tmp_path / "r.jpg")
    assert Image.open(tmp_path / "r.jpg").size == (40, 60)  # stored (w, h) is rotated
    img = load_image(tmp_path / "r.jpg")
    assert img.shape == shown.shape
    assert image_size(tmp_path / "r.jpg") == (40, 60)
    red = (img[..., 0] > 128) & (img[..., 1] < 100)
    ys, xs = np.nonzero(red)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)


def test_truncated_image_raises_naming_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.jpg"):
        load_image(tmp_path / "t.jpg")


def test_garbage_and_missing_files_raise(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image")
    with pytest.raises(ImageReadError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg")
    with pytest.raises(ImageReadError, match="nothere.png"):
        load_image(tmp_path / "nothere.png")
