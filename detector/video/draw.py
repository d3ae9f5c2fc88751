"""Drawing detections and text overlays on RGB images with OpenCV.

Used by ``tools/predict.py``, the evaluation gallery and the video demo. Every function takes an
``np.ndarray[H, W, 3]`` of ``uint8`` RGB and returns a new array; the input is never modified.
"""
from __future__ import annotations

import colorsys
import zlib
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

__all__ = ["color_for", "draw_detections", "draw_overlay"]

ColorKey = Literal["auto", "class", "track"]

# Golden-ratio hue steps spread consecutive keys around the colour wheel, so ids 1, 2, 3... get
# clearly different colours and a key's colour never depends on which other keys are present.
_GOLDEN = 0.618033988749895
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(key: int | str) -> tuple[int, int, int]:
    """A stable, saturated RGB colour for ``key`` (a class name or a track id).

    Strings are hashed with CRC32 rather than ``hash()``, which is salted per process: the colour of
    "car" must be the same in every run and every tool.
    """
    k = zlib.crc32(key.encode("utf-8")) if isinstance(key, str) else int(key)
    hue = (k * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``bg`` (ITU-R BT.601 luma)."""
    luma = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _check_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}")
    # cv2 draws in place and needs a C-contiguous buffer; copying also leaves the caller's array alone.
    return np.ascontiguousarray(arr).copy()


def _scale(image: np.ndarray) -> tuple[int, float]:
    """Line thickness and font scale that stay legible from 320 px thumbnails to 4K frames."""
    side = min(image.shape[0], image.shape[1])
    thickness = max(1, round(side / 360))
    font_scale = max(0.35, side / 1200)
    return thickness, font_scale


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray | Sequence[Sequence[float]],
    scores: np.ndarray | Sequence[float] | None,
    names: Sequence[str],
    track_ids: Sequence[int | None] | None = None,
    color_key: ColorKey = "auto",
    thickness: int | None = None,
    font_scale: float | None = None,
) -> np.ndarray:
    """Draw boxes with "name 0.87" (or "#12 name 0.87" when tracked) labels.

    Args:
        image: ``np.ndarray[H, W, 3]`` uint8 RGB.
        boxes: ``[N, 4]`` boxes ``(x1, y1, x2, y2)`` in the image's pixels (numpy, list or CPU tensor).
        scores: ``[N]`` confidences in 0..1, or None to draw names only.
        names: ``N`` class names, one per box.
        track_ids: ``N`` track ids (an entry may be None for an untracked box), or None.
        color_key: ``"class"`` colours by name, ``"track"`` by track id (falling back to the name
            for boxes without an id), ``"auto"`` means ``"track"`` when ``track_ids`` is given.
        thickness, font_scale: override the size-derived defaults.

    Returns:
        A new ``np.ndarray[H, W, 3]`` uint8 RGB image.
    """
    canvas = _check_image(image)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(b)
    s = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(names) != n or (s is not None and len(s) != n) or (track_ids is not None and len(track_ids) != n):
        raise ValueError(
            f"boxes ({n}), scores ({None if s is None else len(s)}), names ({len(names)}) and "
            f"track_ids ({None if track_ids is None else len(track_ids)}) must have one entry per box"
        )
    if color_key not in ("auto", "class", "track"):
        raise ValueError(f"color_key must be 'auto', 'class' or 'track', got {color_key!r}")
    by_track = color_key == "track" or (color_key == "auto" and track_ids is not None)
    auto_t, auto_f = _scale(canvas)
    t = thickness or auto_t
    fs = font_scale or auto_f
    text_t = max(1, t // 2)
    h, w = canvas.shape[:2]

    for i in range(n):
        if not np.all(np.isfinite(b[i])):
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in b[i])
        tid = None if track_ids is None else track_ids[i]
        color = color_for(int(tid)) if by_track and tid is not None else color_for(str(names[i]))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, t, lineType=cv2.LINE_AA)

        parts = [] if tid is None else [f"#{int(tid)}"]
        parts.append(str(names[i]))
        if s is not None:
            parts.append(f"{s[i]:.2f}")
        label = " ".join(parts)
        (tw, th), base = cv2.getTextSize(label, _FONT, fs, text_t)
        pad = max(1, t)
        # Label above the box; inside its top edge when the box touches the image's top.
        top = y1 - th - base - 2 * pad
        if top < 0:
            top = max(0, y1)
        left = min(max(0, x1), max(0, w - tw - 2 * pad))
        bottom = min(h - 1, top + th + base + 2 * pad)
        cv2.rectangle(canvas, (left, top), (left + tw + 2 * pad, bottom), color, -1)
        cv2.putText(canvas, label, (left + pad, top + pad + th), _FONT, fs, _text_color(color), text_t,
                    lineType=cv2.LINE_AA)
    return canvas


def draw_overlay(
    image: np.ndarray,
    lines: Sequence[str],
    origin: tuple[int, int] = (8, 8),
    font_scale: float | None = None,
    alpha: float = 0.55,
) -> np.ndarray:
    """Write ``lines`` (e.g. "model 12.3 ms", "FPS 41.0") in a translucent dark panel.

    Args:
        image: ``np.ndarray[H, W, 3]`` uint8 RGB.
        lines: text lines, top to bottom.
        origin: ``(x, y)`` pixel of the panel's top-left corner.
        font_scale: overrides the size-derived default.
        alpha: panel opacity in 0..1 (the frame stays visible through it).

    Returns:
        A new ``np.ndarray[H, W, 3]`` uint8 RGB image.
    """
    canvas = _check_image(image)
    if not lines:
        return canvas
    t, fs = _scale(canvas)
    fs = font_scale or fs * 1.2
    text_t = max(1, t // 2 + 1)
    sizes = [cv2.getTextSize(str(line), _FONT, fs, text_t) for line in lines]
    line_h = max(th + base for (_, th), base in sizes) + max(2, t * 2)
    pad = max(4, t * 3)
    x0, y0 = origin
    x1 = min(canvas.shape[1], x0 + max(tw for (tw, _), _ in sizes) + 2 * pad)
    y1 = min(canvas.shape[0], y0 + line_h * len(lines) + 2 * pad)
    if x1 > x0 and y1 > y0:
        region = canvas[y0:y1, x0:x1]
        # Blend only the panel's pixels towards black instead of a full-frame addWeighted.
        region[:] = (region.astype(np.float32) * (1.0 - alpha)).astype(np.uint8)
    for k, line in enumerate(lines):
        (_, th), _ = sizes[k]
        y = y0 + pad + k * line_h + th
        cv2.putText(canvas, str(line), (x0 + pad, y), _FONT, fs, (255, 255, 255), text_t, lineType=cv2.LINE_AA)
    return canvas
