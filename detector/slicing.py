"""Views of a wide frame for a fixed-size network: sliced inference (SAHI) and letterboxing.

A dashcam frame is 2:1 to 3.3:1; squashed into a square (or 224x384) input, its small objects
shrink by the same factor. Two remedies, both options of :class:`detector.inference.Predictor`:

- **Slicing** (SAHI, Akyon et al. 2022): the model also runs on overlapping tiles of the frame, each
  resized to the input as a whole frame would be, and the detections of all views are merged by
  class-wise NMS (``torchvision.ops.batched_nms``). By default the tiles are as tall as the frame
  and have the network's aspect ratio (on a 1242x375 frame and a square network: four 375x375 tiles
  at 20% overlap), plus the whole frame for the objects larger than a tile.
- **Letterboxing**: the frame is padded (bottom and right, with the normalisation mean, so the
  padding is zero after normalising) to the network's aspect ratio instead of stretched; boxes come
  back in the frame's pixels unchanged, since the padding adds none on the top or left.

Written here: SAHI itself is a dependency-heavy package built around its own model wrappers; the
tiling rule and the merge are a few lines over torchvision's NMS.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

__all__ = ["MODEL_VIEW", "PLACEMENTS", "FrameView", "Slicing", "add_view_arguments", "clip_detections", "letterbox", "merge_views", "tile_starts", "view_options"]


PLACEMENTS: tuple[str, ...] = ("even", "sahi")


def tile_starts(length: int, tile: int, overlap: float, placement: str = "sahi") -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length``, neighbours sharing at least
    ``overlap`` of a tile; the first starts at 0, the last ends at the border.

    ``"sahi"`` (the default): SAHI's rule, steps of ``tile * (1 - overlap)`` and one more tile moved
    back to the border, which can land a few pixels from the one before. ``"even"``: the fewest tiles
    that keep that overlap, spread evenly, so no two are nearly the same view. On kitti-dev (50 real
    KITTI frames, the driving model, ``docs/driving.md``) SAHI's rule scored higher (KITTI Car moderate
    14.9 against 13.9): its two nearly equal tiles look twice at the right of the frame, where that
    model finds most cars, so it stays the default.

    Example (a 1242-pixel KITTI frame, 643-pixel tiles of a 224x384 network, 20 % overlap):
    ``tile_starts(1242, 643, 0.2) == [0, 514, 599]`` (two tiles 85 px apart);
    ``tile_starts(1242, 643, 0.2, "even") == [0, 300, 599]``; ``tile_starts(375, 375, 0.2) == [0]``.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"tile placement must be one of {PLACEMENTS}, got {placement!r}")
    if tile >= length:
        return [0]
    if placement == "even":
        gaps = math.ceil((length - tile) / max(1.0, tile * (1.0 - overlap)) - 1e-9)
        return [round(i * (length - tile) / gaps) for i in range(gaps + 1)]
    step = max(1, int(tile * (1.0 - overlap)))
    starts = list(range(0, length - tile, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class Slicing:
    """How to slice a frame.

    Args:
        tile: ``(h, w)`` of a tile in frame pixels; ``None``: as tall as the frame (or as wide, for a
            portrait frame) with the network input's aspect ratio.
        overlap: fraction of a tile its neighbours share, in both directions.
        full_frame: run on the whole frame too (SAHI's ``perform_standard_pred``).
        merge_iou: IoU above which NMS merges two same-class detections of different views.
        placement: ``"sahi"`` (SAHI's fixed step, the last tile moved back to the border) or ``"even"``
            (the fewest tiles with that overlap, spread evenly); see :func:`tile_starts`.
    """

    tile: tuple[int, int] | None = None
    overlap: float = 0.2
    full_frame: bool = True
    merge_iou: float = 0.5
    placement: str = "sahi"

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"slice overlap must be in [0, 1), got {self.overlap}")
        if self.tile is not None and min(self.tile) < 1:
            raise ValueError(f"slice size must be positive, got {self.tile}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"slice placement must be one of {PLACEMENTS}, got {self.placement!r}")

    def windows(self, height: int, width: int, input_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
        """``(x0, y0, x1, y1)`` of every view of a ``height x width`` frame, the whole frame first (when
        ``full_frame``); a frame no larger than one tile is only the whole frame."""
        if self.tile is not None:
            tile_h, tile_w = min(self.tile[0], height), min(self.tile[1], width)
        else:
            aspect = input_size[1] / input_size[0]  # w / h of the network input
            tile_h = min(height, int(round(width / aspect)))
            tile_w = min(width, int(round(tile_h * aspect)))
        full = (0, 0, width, height)
        tiles = [(x, y, x + tile_w, y + tile_h) for y in tile_starts(height, tile_h, self.overlap, self.placement)
                 for x in tile_starts(width, tile_w, self.overlap, self.placement)]
        tiles = [t for t in tiles if t != full]
        return ([full] if self.full_frame or not tiles else []) + tiles


MODEL_VIEW = "model"  # Predictor(slicing=...)'s default: the view the model records (FrameView)


@dataclass(frozen=True)
class FrameView:
    """How a model wants to see a frame of a given shape; recorded in its config as ``view`` (so in its
    checkpoint and its ONNX / ExecuTorch metadata) and used by :class:`detector.inference.Predictor`
    and the tools unless their options say otherwise.

    Args:
        slicing: the tiles of a frame wide enough (``None``: never sliced).
        slice_min_aspect: frames whose width / height is at least this are sliced; narrower ones are
            seen whole (a 1242x375 KITTI frame is 3.3, a 1280x720 one 1.8). 0: every frame.
        letterbox: pad frames (and tiles) to the input's aspect ratio instead of stretching them.
    """

    slicing: Slicing | None = None
    slice_min_aspect: float = 0.0
    letterbox: bool = False

    def slicing_for(self, height: int, width: int) -> Slicing | None:
        """The slicing of a ``height x width`` frame, or ``None`` to see it whole."""
        if self.slicing is None or width < self.slice_min_aspect * height:
            return None
        return self.slicing

    def to_config(self) -> dict[str, object]:
        """Plain types, for a model's ``config["view"]`` (checkpoints load with ``weights_only=True``)."""
        slicing = None
        if self.slicing is not None:
            s = self.slicing
            slicing = {"tile": list(s.tile) if s.tile else None, "overlap": s.overlap, "full_frame": s.full_frame,
                       "merge_iou": s.merge_iou, "placement": s.placement}
        return {"slicing": slicing, "slice_min_aspect": self.slice_min_aspect, "letterbox": self.letterbox}

    @classmethod
    def from_config(cls, entry: Mapping[str, object] | None) -> FrameView:
        """The inverse of :meth:`to_config`; ``None`` (a model that records no view): whole frames,
        stretched. ``ValueError`` on an entry this version cannot read."""
        if not entry:
            return cls()
        try:
            slicing = entry.get("slicing")
            if slicing is not None:
                tile = slicing.get("tile")  # type: ignore[union-attr]
                slicing = Slicing(tile=(int(tile[0]), int(tile[1])) if tile else None,
                                  **{k: slicing[k] for k in ("overlap", "full_frame", "merge_iou", "placement")  # type: ignore[index]
                                     if k in slicing})  # type: ignore[operator]
            return cls(slicing=slicing, slice_min_aspect=float(entry.get("slice_min_aspect", 0.0)),  # type: ignore[arg-type]
                       letterbox=bool(entry.get("letterbox", False)))
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"unreadable view entry {dict(entry)!r} in the model's config: {err}") from err

    def override(self, slicing: Slicing | None | str = MODEL_VIEW, letterbox: bool | None = None) -> FrameView:
        """This view with a caller's choices: ``slicing`` a :class:`Slicing` (every frame sliced so) or
        ``None`` (whole frames), :data:`MODEL_VIEW` keeps this one's; ``letterbox`` likewise (``None``:
        keep)."""
        view = self
        if not isinstance(slicing, str):
            view = FrameView(slicing=slicing, slice_min_aspect=0.0, letterbox=view.letterbox)
        elif slicing != MODEL_VIEW:
            raise ValueError(f"slicing must be a Slicing, None or {MODEL_VIEW!r}, got {slicing!r}")
        if letterbox is not None:
            view = FrameView(view.slicing, view.slice_min_aspect, bool(letterbox))
        return view

    def describe(self) -> str:
        """One line for summaries."""
        parts = []
        if self.slicing is not None:
            tile = "x".join(map(str, self.slicing.tile)) if self.slicing.tile else "frame-high"
            when = f" frames of width/height >= {self.slice_min_aspect:g}" if self.slice_min_aspect > 0 else " every frame"
            parts.append(f"sliced ({tile} tiles, overlap {self.slicing.overlap:g}, {self.slicing.placement}) for{when}")
        else:
            parts.append("whole frame")
        if self.letterbox:
            parts.append("letterboxed")
        return ", ".join(parts)


def letterbox(image: np.ndarray, input_size: tuple[int, int], mean: Sequence[float]) -> np.ndarray:
    """``image`` (``HxWx3`` uint8) padded at the bottom or right to ``input_size``'s aspect ratio with
    the colour ``mean`` (0..1), so it resizes to the input without distortion. Frame pixels keep their
    coordinates."""
    height, width = image.shape[:2]
    in_h, in_w = input_size
    target_w = max(width, math.ceil(height * in_w / in_h))
    target_h = max(height, math.ceil(width * in_h / in_w))
    if (target_h, target_w) == (height, width):
        return image
    fill = np.asarray([round(255 * m) for m in mean], dtype=np.uint8)
    padded = np.empty((target_h, target_w, 3), dtype=np.uint8)
    padded[:] = fill
    padded[:height, :width] = image
    return padded


def clip_detections(det: Mapping[str, Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
    """``det``'s boxes clipped to an ``(h, w)`` image (a letterboxed view's detections back to the view)."""
    height, width = size
    boxes = torch.as_tensor(det["boxes"], dtype=torch.float32).reshape(-1, 4)
    return {**det, "boxes": torch.minimum(boxes.clamp(min=0), boxes.new_tensor([width, height, width, height]))}


def merge_views(detections: Sequence[dict[str, Tensor]], windows: Sequence[tuple[int, int, int, int]],
                frame_size: tuple[int, int], iou_threshold: float, max_detections: int | None) -> dict[str, Tensor]:
    """One frame's detections from those of its views (each in its view's pixels): shifted to the frame,
    clipped to it, merged by class-wise NMS, best first, at most ``max_detections``."""
    boxes, scores, labels = [], [], []
    for det, (x0, y0, _, _) in zip(detections, windows):
        b = torch.as_tensor(det["boxes"], dtype=torch.float32).reshape(-1, 4)
        boxes.append(b + b.new_tensor([x0, y0, x0, y0]))
        scores.append(torch.as_tensor(det["scores"], dtype=torch.float32).reshape(-1))
        labels.append(torch.as_tensor(det["labels"], dtype=torch.int64).reshape(-1))
    all_boxes = clip_detections({"boxes": torch.cat(boxes)}, frame_size)["boxes"]
    all_scores, all_labels = torch.cat(scores), torch.cat(labels)
    keep = batched_nms(all_boxes, all_scores, all_labels, iou_threshold)[:max_detections]  # by descending score
    return {"boxes": all_boxes[keep], "scores": all_scores[keep], "labels": all_labels[keep]}


def _size(text: str) -> tuple[int, int]:
    """``"375"`` -> ``(375, 375)``; ``"300x500"`` -> ``(300, 500)`` (height x width)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--slice-size takes S or HxW in pixels, got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    """The tools' flags for sliced inference and letterboxing (``predict.py``, ``eval.py``, ``demo_video.py``)."""
    group = parser.add_argument_group("wide frames (detector.slicing)")
    group.add_argument("--slice", action="store_true",
                       help="also run on overlapping tiles of each image and merge by NMS (SAHI); tiles as tall "
                            "as the image with the network's aspect ratio unless --slice-size")
    group.add_argument("--no-slice", action="store_true",
                       help="see each image whole, stretched to the input, whatever view the model records "
                            "(its sliced or letterboxed default)")
    group.add_argument("--slice-size", help="tile size in image pixels, S or HxW (implies --slice)")
    group.add_argument("--slice-overlap", type=float, help="overlap of neighbouring tiles (default: 0.2; with --slice)")
    group.add_argument("--slice-no-full-frame", action="store_true", help="tiles only, not the whole image too")
    group.add_argument("--slice-placement", choices=PLACEMENTS,
                       help="sahi: SAHI's fixed step, the last tile moved back to the border (default); even: the "
                            "fewest tiles with that overlap, spread evenly (with --slice)")
    group.add_argument("--letterbox", action="store_true",
                       help="pad images (and tiles) to the network's aspect ratio instead of stretching them")


def view_options(args: argparse.Namespace) -> dict[str, object]:
    """:class:`detector.inference.Predictor` keywords from :func:`add_view_arguments`' flags: only those
    the flags set, so the model's recorded view (:class:`FrameView`) holds for the rest.

    Raises:
        ValueError: a tile option without ``--slice`` / ``--slice-size`` (it would do nothing), or
            ``--no-slice`` with a slicing or letterbox flag."""
    if getattr(args, "no_slice", False):
        given = [flag for flag, value in (("--slice", args.slice), ("--slice-size", args.slice_size),
                                          ("--letterbox", args.letterbox)) if value]
        if given:
            raise ValueError(f"--no-slice sees images whole: drop {' and '.join(given)}")
        return {"slicing": None, "letterbox": False}
    options: dict[str, object] = {"letterbox": True} if args.letterbox else {}
    if args.slice or args.slice_size:
        overlap = 0.2 if args.slice_overlap is None else args.slice_overlap
        slicing = Slicing(tile=_size(args.slice_size) if args.slice_size else None, overlap=overlap,
                          full_frame=not args.slice_no_full_frame, placement=args.slice_placement or "sahi")
    else:
        given = [flag for flag, value in (("--slice-overlap", args.slice_overlap is not None),
                                          ("--slice-no-full-frame", args.slice_no_full_frame),
                                          ("--slice-placement", args.slice_placement is not None)) if value]
        if given:
            raise ValueError(f"{' and '.join(given)} apply to sliced inference: add --slice (or --slice-size)")
        return options
    return {**options, "slicing": slicing}
