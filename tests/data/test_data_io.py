from __future__ import annotations

import warnings
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


def test_16bit_grey_png_keeps_the_high_byte(tmp_path: Path) -> None:
    values = np.array([[0, 255, 256, 1000], [32768, 40000, 65280, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"  # a real 16-bit file, not 8-bit
    img = load_image(tmp_path / "g16.png")
    assert img.dtype == np.uint8 and img.shape == (2, 4, 3)
    # Full range maps to full range, whatever the image's own maximum: 0 -> 0, 65535 -> 255.
    assert img[..., 0].tolist() == [[0, 0, 1, 3], [128, 156, 255, 255]]
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all()


def test_16bit_grey_matches_pil_on_the_same_pixels_in_rgb(tmp_path: Path) -> None:
    # PIL reads a 16-bit RGB PNG to 8 bits itself; a grey 16-bit PNG of the same pixels must agree.
    rng = np.random.default_rng(1)
    values = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "rgb16.png"), np.repeat(values[:, :, None], 3, axis=2))
    assert np.array_equal(load_image(tmp_path / "g16.png"), np.asarray(Image.open(tmp_path / "rgb16.png").convert("RGB")))


def test_palette_with_transparency_decodes_without_warnings(tmp_path: Path) -> None:
    im = Image.new("P", (4, 3))
    im.putpalette([0, 255, 0, 200, 10, 10, 0, 0, 255] + [0] * 759)
    im.putpixel((1, 1), 1)
    im.putpixel((2, 2), 2)
    # Per-entry alpha (tRNS): entry 0 fully transparent, entry 1 half, entry 2 opaque.
    im.save(tmp_path / "pt.png", transparency=bytes([0, 128, 255]))
    assert Image.open(tmp_path / "pt.png").info["transparency"] == bytes([0, 128, 255])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns when such a palette goes straight to RGB
        img = load_image(tmp_path / "pt.png")
    # Alpha dropped, not composited: each pixel keeps its palette colour.
    assert img[0, 0].tolist() == [0, 255, 0] and img[1, 1].tolist() == [200, 10, 10]
    assert img[2, 2].tolist() == [0, 0, 255]


def test_adobe_cmyk_jpeg_colours(tmp_path: Path) -> None:
    # Quadrants: red (M+Y), cyan (C), black (K), white (no ink), 16 px each so JPEG keeps them flat.
    cmyk = np.zeros((32, 32, 4), np.uint8)
    cmyk[:16, :16] = (0, 255, 255, 0)
    cmyk[:16, 16:] = (255, 0, 0, 0)
    cmyk[16:, :16] = (0, 0, 0, 255)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=100)
    opened = Image.open(tmp_path / "c.jpg")
    assert opened.mode == "CMYK" and "adobe" in opened.info  # Adobe's APP14 marker: inverted CMYK
    img = load_image(tmp_path / "c.jpg")
    assert np.array_equal(img, np.asarray(opened.convert("RGB")))
    centres = {"red": img[8, 8], "cyan": img[8, 24], "black": img[24, 8], "white": img[24, 24]}
    expected = {"red": (255, 0, 0), "cyan": (0, 255, 255), "black": (0, 0, 0), "white": (255, 255, 255)}
    for name, rgb in expected.items():
        assert np.abs(centres[name].astype(int) - rgb).max() <= 6, (name, centres[name])


def test_zero_byte_file_raises_naming_it(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg.*empty file \(0 bytes\)"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageReadError, match=r"empty\.jpg.*empty file"):
        image_size(tmp_path / "empty.jpg")
