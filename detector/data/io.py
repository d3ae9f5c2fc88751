"""Image decoding that survives real-world files: grey, RGBA, palette, CMYK, EXIF-rotated."""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "image_size", "is_image_file", "list_images", "load_image"]

# The one list of file suffixes the project treats as images (lower case; PIL decodes them all).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def is_image_file(path: str | PathLike[str]) -> bool:
    """Whether ``path`` names an image by its suffix (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | PathLike[str], recursive: bool = True) -> list[Path]:
    """The image files under ``folder`` (by :data:`IMAGE_SUFFIXES`), sorted by path."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and is_image_file(p))


class ImageReadError(OSError):
    """An image file that cannot be opened or fully decoded; the message names the file."""

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        super().__init__(f"cannot read image {str(path)!r}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_image(path: str | PathLike[str]) -> np.ndarray:
    """Decode ``path`` to an ``np.ndarray[H, W, 3]`` of ``uint8`` RGB.

    The EXIF orientation is applied (so annotations drawn on the image as a viewer shows it stay on
    their objects), and every PIL mode is converted to RGB:

    - ``L``, ``LA``, ``RGBA``: alpha is dropped, not composited (detection data rarely relies on it);
    - ``P`` / ``PA`` (palette, with or without transparency): expanded to the palette's colours;
    - ``CMYK`` (Adobe's inverted JPEG flavour included, which PIL undoes): converted by PIL;
    - ``I;16*`` (16-bit grey PNG / TIFF): the high byte, ``v >> 8``, the mapping PIL itself uses for
      16-bit RGB PNGs and OpenCV's ``imread`` uses for all of them, so the same file reads the same
      whatever its channel count; ``I`` / ``F`` (32-bit, range unknown): scaled by the maximum when
      it exceeds 255.

    Raises:
        ImageReadError: the file is missing, empty, not an image, or truncated / corrupt.
    """
    try:
        with Image.open(path) as im:
            # load() forces the full decode here, so a truncated file fails now rather than later.
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16"):
                arr = np.asarray(im).astype(np.uint16)  # native byte order whatever the file's
                im = Image.fromarray((arr >> 8).astype(np.uint8), mode="L")
            elif im.mode in ("I", "F"):
                arr = np.asarray(im, dtype=np.float32)
                hi = float(arr.max()) if arr.size else 0.0
                arr = arr * (255.0 / hi) if hi > 255 else arr
                im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
            elif im.mode in ("P", "PA"):
                # Straight to RGB, PIL warns on a palette with per-entry alpha; via RGBA it does not.
                im = im.convert("RGBA")
            rgb = im.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except FileNotFoundError as err:
        raise ImageReadError(path, "file not found") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        # PIL signals truncation and corrupt data with OSError, bad headers with SyntaxError/ValueError.
        raise ImageReadError(path, _reason(path, err)) from err


def _reason(path: str | PathLike[str], err: Exception) -> str:
    """The failure in words; an empty file says so, since PIL only says it cannot identify it."""
    try:
        if Path(path).stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    return f"{type(err).__name__}: {err}"


def image_size(path: str | PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of the image as :func:`load_image` returns it, from the header only."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation tag
    except FileNotFoundError as err:
        raise ImageReadError(path, "file not found") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(path, _reason(path, err)) from err
    # Orientations 5-8 swap the axes (transpose, rotate 90 / 270, transverse).
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)
