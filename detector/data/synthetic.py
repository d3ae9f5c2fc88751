"""The embedded synthetic set: solid shapes on cluttered, textured backgrounds, in COCO format.

Made to be learnable in minutes on a CPU (the quickstart trains SSDLite on it): five distinct shape
classes in saturated colours that stand out from a low-saturation background, mostly 40 px to most
of the image, a few small ones, 0-4 per image, light occlusion, some images without objects.
Every box is the tight box of the shape's *visible* pixels, so COCO AP at IoU 0.75+ is meaningful.
Each image depends only on ``(seed, split, index)``, so output is deterministic per seed.
"""
from __future__ import annotations

import colorsys
import json
import math
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["CLASSES", "SyntheticConfig", "render_image", "make_split", "make_synthetic"]

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SyntheticConfig:
    """Generation knobs; the defaults are the quickstart's (learnable at 320x320)."""

    image_size: int = 320
    max_objects: int = 4
    empty_fraction: float = 0.08  # images with no object (negatives)
    min_size: int = 40  # object extent in px, log-uniform between min_size and max_size_fraction * image
    max_size_fraction: float = 0.85
    small_fraction: float = 0.1  # share of objects drawn small instead, from small_size
    small_size: tuple[int, int] = (22, 32)
    max_occlusion: float = 0.3  # no object loses more than this share of its pixels to later ones
    clutter: int = 8  # background distractor strokes per image (low contrast)
    jpeg_quality: int = 92


def _shape_polygon(cls: str, radius: float, angle: float) -> np.ndarray:
    """Vertices [V, 2] (x, y) around the origin for a polygonal shape of circumradius ``radius``."""
    if cls == "square":
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        r = np.full(4, radius)
    elif cls == "triangle":
        t = angle + np.arange(3) * 2 * np.pi / 3
        r = np.full(3, radius)
    elif cls == "star":
        t = angle + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
    elif cls == "cross":
        # A plus sign with arms 0.36 of its span wide: 12 corners, then rotated.
        a, b = 0.36 * radius, radius / math.sqrt(1 + 0.36**2)
        pts = np.array([(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b),
                        (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a), (-a, b)])
        c, s = math.cos(angle), math.sin(angle)
        return pts @ np.array([[c, s], [-s, c]])
    else:
        raise ValueError(f"unknown shape {cls!r}")
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _shape_mask(cls: str, size: int, angle: float) -> np.ndarray:
    """A binary uint8 mask [size, size] of the shape centred in it."""
    mask = np.zeros((size, size), np.uint8)
    centre = (size - 1) / 2.0
    radius = (size - 1) / 2.0
    if cls == "circle":
        # Drawn with 4 fractional bits (shift) so small circles stay round.
        cv2.circle(mask, (int(round(centre * 16)), int(round(centre * 16))), int(round(radius * 16)), 1, -1,
                   lineType=cv2.LINE_8, shift=4)
    else:
        pts = _shape_polygon(cls, radius, angle) + centre
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask


def _background(rng: np.random.Generator, size: int, clutter: int) -> np.ndarray:
    """A low-saturation textured background with faint strokes and blobs: HxWx3 float32."""
    grey = rng.uniform(70, 180)
    tint = rng.uniform(-20, 20, 3)
    low = cv2.resize((grey + tint + rng.uniform(-35, 35, (4, 4, 1))).astype(np.float32), (size, size),
                     interpolation=cv2.INTER_CUBIC)
    mid = cv2.resize(rng.normal(0, 10, (size // 8, size // 8)).astype(np.float32), (size, size),
                     interpolation=cv2.INTER_LINEAR)
    img = low + mid[..., None]
    for _ in range(int(rng.integers(clutter // 2, clutter + 1))):
        if rng.random() < 0.6:
            colour = tuple(float(v) for v in grey + tint + rng.uniform(-45, 45, 3))
            p1 = tuple(int(v) for v in rng.integers(0, size, 2))
            p2 = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(img, p1, p2, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            # Blobs stay fainter than lines so that they do not read as small circles.
            colour = tuple(float(v) for v in grey + tint + rng.uniform(-30, 30, 3))
            centre = tuple(int(v) for v in rng.integers(0, size, 2))
            axes = tuple(int(v) for v in rng.integers(3, 12, 2))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    return img


def _object_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A saturated colour far from the local background (RGB 0..255)."""
    for _ in range(10):
        dark = rng.random() < 0.25
        value = rng.uniform(0.05, 0.25) if dark else rng.uniform(0.8, 1.0)
        rgb = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1.0), value)) * 255
        if np.abs(rgb - background_mean).mean() > 70:
            break
    return rgb


def render_image(rng: np.random.Generator, config: SyntheticConfig = SyntheticConfig()) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one image.

    Returns:
        ``(image np.ndarray[S, S, 3] uint8 RGB, objects)``, each object ``{"category_id": 1..5,
        "bbox": [x, y, w, h]`` (COCO, tight around the visible pixels), ``"area": visible pixels}``.
    """
    size = config.image_size
    img = _background(rng, size, config.clutter)
    # Instance map: 0 background, k = k-th object; later objects overwrite earlier ones.
    inst = np.zeros((size, size), np.uint8)
    full_area: list[int] = [0]
    classes: list[int] = []
    n_target = 0 if rng.random() < config.empty_fraction else int(rng.integers(1, config.max_objects + 1))
    max_size = max(config.min_size + 1, int(config.max_size_fraction * size))
    for _ in range(n_target * 6):  # a few placement tries per object
        if len(classes) == n_target:
            break
        if rng.random() < config.small_fraction:
            extent = int(rng.integers(config.small_size[0], config.small_size[1] + 1))
        else:
            extent = int(round(math.exp(rng.uniform(math.log(config.min_size), math.log(max_size)))))
        extent = min(extent, size)
        cls = int(rng.integers(len(CLASSES)))
        local = _shape_mask(CLASSES[cls], extent, float(rng.uniform(0, 2 * np.pi)))
        x0 = int(rng.integers(0, size - extent + 1))
        y0 = int(rng.integers(0, size - extent + 1))
        region = inst[y0 : y0 + extent, x0 : x0 + extent]
        on = local.astype(bool)
        # Reject placements that hide too much of an earlier object.
        covered = np.bincount(region[on], minlength=len(full_area))
        visible = np.bincount(inst.ravel(), minlength=len(full_area))
        if any(visible[k] - covered[k] < (1 - config.max_occlusion) * full_area[k] for k in range(1, len(full_area))):
            continue
        background_mean = img[y0 : y0 + extent, x0 : x0 + extent][on].mean(axis=0)
        colour = _object_colour(rng, background_mean)
        region[on] = len(full_area)
        img[y0 : y0 + extent, x0 : x0 + extent][on] = colour
        full_area.append(int(on.sum()))
        classes.append(cls)
    img += rng.normal(0, 3.0, (size, size, 1)).astype(np.float32)  # sensor noise, shared by the channels
    image = np.clip(img, 0, 255).astype(np.uint8)
    objects = []
    for k, cls in enumerate(classes, start=1):
        mask = (inst == k).astype(np.uint8)
        area = int(mask.sum())
        if area == 0:
            continue
        x, y, w, h = cv2.boundingRect(mask)
        objects.append({"category_id": cls + 1, "bbox": [x, y, w, h], "area": area})
    return image, objects


def make_split(
    output: str | PathLike[str],
    split: str,
    num_images: int,
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``output/<split>/*.jpg`` and ``output/<split>.json`` (COCO); returns the COCO dict."""
    out = Path(output)
    image_dir = out / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    indices = range(num_images)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"synthetic {split}", unit="img")
    for i in indices:
        rng = np.random.default_rng([seed, _SPLIT_CODE.get(split, 99), i])
        image, objects = render_image(rng, config)
        file_name = f"{i + 1:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
        if not ok:
            raise RuntimeError(f"could not encode {file_name}")
        (image_dir / file_name).write_bytes(buf.tobytes())
        images.append({"id": i + 1, "file_name": file_name, "width": config.image_size, "height": config.image_size})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0, **obj})
    coco = {
        "info": {"description": f"detector synthetic shapes, split {split}, seed {seed}",
                 "config": asdict(config)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASSES)],
    }
    (out / f"{split}.json").write_text(json.dumps(coco))
    return coco


def make_synthetic(
    output: str | PathLike[str],
    num_train: int = 1000,
    num_val: int = 200,
    seed: int = 0,
    config: SyntheticConfig = SyntheticConfig(),
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Write the train and val splits under ``output``; returns ``{"train": coco, "val": coco}``."""
    return {
        "train": make_split(output, "train", num_train, seed, config, progress),
        "val": make_split(output, "val", num_val, seed, config, progress),
    }
