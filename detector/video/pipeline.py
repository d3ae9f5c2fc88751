"""The engine behind ``tools/demo_video.py``: decode, detect, track, draw, encode, one frame at a time.

The detector is any callable ``detect_fn(frame) -> dict`` (``Predictor.predict`` fits), so this
module needs no model and is tested with fake detectors.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from detector.video.tracking import Tracker
from detector.video.io import VideoReadError, VideoWriter, open_source
from detector.video.draw import draw_detections, draw_overlay

__all__ = ["DetectFn", "run_video"]

# detect_fn(frame np.ndarray[H, W, 3] uint8 RGB) -> {"boxes": [N, 4] xyxy frame pixels,
# "scores": [N], "labels": [N] ints, "names": N strings} (numpy arrays, lists or CPU tensors).
DetectFn = Callable[[np.ndarray], Mapping[str, Any]]

# Frame rate for sources that do not report one (image folders get `fps`, some webcams nothing).
_DEFAULT_FPS = 25.0


def _as_numpy(x: Any, dtype: type, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on a GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x if x is not None else [], dtype=dtype).reshape(-1, *shape_tail)


def _filter(det: Mapping[str, Any], score_threshold: float, classes: set[str] | None) -> dict:
    """Detections as numpy, keeping scores >= threshold and names in ``classes``."""
    boxes = _as_numpy(det.get("boxes"), np.float64, (4,))
    scores = _as_numpy(det.get("scores"), np.float64)
    names = [str(n) for n in det.get("names", [])]
    labels_in = det.get("labels")
    if labels_in is None:
        # No integer labels: derive stable ones from the names so the tracker can still separate classes.
        labels = np.array([sorted(set(names)).index(n) + 1 for n in names], dtype=np.int64)
    else:
        labels = _as_numpy(labels_in, np.int64)
    n = len(boxes)
    if not (len(scores) == len(labels) == len(names) == n):
        raise ValueError(f"detect_fn returned {n} boxes, {len(scores)} scores, {len(labels)} labels "
                         f"and {len(names)} names; expected one of each per detection")
    keep = scores >= score_threshold
    if classes is not None:
        keep &= np.array([nm in classes for nm in names], dtype=bool)
    idx = np.flatnonzero(keep)
    return {"boxes": boxes[idx], "scores": scores[idx], "labels": labels[idx], "names": [names[i] for i in idx]}


def run_video(
    source: str | int | PathLike[str],
    output_path: str | PathLike[str],
    detect_fn: DetectFn,
    classes: Iterable[str] | None = None,
    score_threshold: float = 0.4,
    track: bool = False,
    max_frames: int | None = None,
    *,
    tracker: Tracker | None = None,
    fps: float = _DEFAULT_FPS,
    progress: bool = True,
    crf: int = 23,
) -> dict[str, Any]:
    """Run ``detect_fn`` over a video, write the annotated video and a JSON record beside it.

    Args:
        source: video file, folder of frames, or webcam index (see :func:`detector.video.io.open_source`).
        output_path: ``OUT.mp4``; ``OUT.json`` is written beside it.
        detect_fn: ``frame np.ndarray[H, W, 3] uint8 RGB -> {"boxes" [N, 4] xyxy frame pixels,
            "scores" [N], "labels" [N], "names" N strings}``.
        classes: keep only these class names (None keeps all).
        score_threshold: keep detections scoring at least this.
        track: give objects stable ids with a SORT tracker (drawn as "#id", saved per detection).
        max_frames: stop after this many frames (None: the whole source; needed for webcams).
        tracker: a configured tracker to use when ``track`` (default ``Tracker()``).
        fps: frame rate for image folders and webcams that report none.
        progress: show a tqdm progress bar on stderr.
        crf: H.264 quality (lower is better and larger).

    Returns:
        The summary also written under ``"summary"`` in ``OUT.json``: ``frames``,
        ``mean_model_ms`` (detect_fn time per frame), ``end_to_end_fps`` (decode to encode),
        ``input`` / ``output`` (size, fps, codec...), ``detections`` (total kept), paths.
        ``OUT.json`` also holds ``"frames"``: per frame ``index``, ``timestamp``, ``model_ms`` and
        ``detections`` (``box`` xyxy pixels, ``score``, ``label``, ``name``, and ``track_id`` when
        tracking: an int for a confirmed track, else None).

    Raises:
        VideoReadError: the source cannot be opened or yields no frame.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    out_path = Path(output_path)
    json_path = out_path.with_suffix(".json")
    keep_classes = None if classes is None else {str(c) for c in classes}
    tracker = (tracker or Tracker()) if track else None

    source_obj = open_source(source, fps=fps)
    info = source_obj.info
    rate = info.rate or Fraction(fps).limit_denominator(1001)
    total = info.frame_count
    if max_frames is not None:
        total = max_frames if total is None else min(total, max_frames)

    # Per-frame records go to a side file as they come and are spliced into OUT.json at the end,
    # so a long video's record never sits in memory.
    frames_tmp = json_path.with_name(json_path.name + ".frames.tmp")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    n_frames = 0
    n_dets = 0
    model_s = 0.0
    start = time.perf_counter()
    writer: VideoWriter | None = None
    try:
        with source_obj, open(frames_tmp, "w", encoding="utf-8") as rec, tqdm(
            total=total, unit="frame", disable=not progress, desc=out_path.name
        ) as bar:
            writer = VideoWriter(out_path, info.width, info.height, rate, crf=crf)
            for frame in source_obj:
                if max_frames is not None and n_frames >= max_frames:
                    break
                t0 = time.perf_counter()
                raw = detect_fn(frame.image)
                dt = time.perf_counter() - t0
                model_s += dt
                det = _filter(raw, score_threshold, keep_classes)

                track_ids: list[int | None] | None = None
                if tracker is not None:
                    track_ids = [None] * len(det["boxes"])
                    for t in tracker.update(det["boxes"], det["scores"], det["labels"]):
                        track_ids[t.det_index] = t.track_id

                image = draw_detections(frame.image, det["boxes"], det["scores"], det["names"], track_ids)
                n_frames += 1
                elapsed = time.perf_counter() - start
                image = draw_overlay(image, [f"model {dt * 1000:.1f} ms", f"FPS {n_frames / elapsed:.1f}"])
                writer.write(image)

                dets = [
                    {"box": [round(float(v), 2) for v in det["boxes"][i]], "score": round(float(det["scores"][i]), 4),
                     "label": int(det["labels"][i]), "name": det["names"][i]}
                    for i in range(len(det["boxes"]))
                ]
                if track_ids is not None:
                    for d, tid in zip(dets, track_ids):
                        d["track_id"] = tid
                n_dets += len(dets)
                rec.write(json.dumps({"index": frame.index, "timestamp": round(frame.timestamp, 4),
                                      "model_ms": round(dt * 1000, 3), "detections": dets}) + "\n")
                bar.update(1)
            writer.close()
        wall = time.perf_counter() - start
        if n_frames == 0:
            raise VideoReadError(source, "no frame was decoded")

        summary: dict[str, Any] = {
            "input": info.to_dict(),
            "output": {"path": str(out_path), "json": str(json_path), "width": writer.width,
                       "height": writer.height, "fps": writer.fps, "codec": writer.codec_name,
                       "container": "mp4", "pix_fmt": "yuv420p"},
            "frames": n_frames,
            "detections": n_dets,
            "mean_model_ms": round(model_s / n_frames * 1000, 3),
            "end_to_end_fps": round(n_frames / wall, 3) if wall > 0 else None,
            "wall_s": round(wall, 3),
            "score_threshold": score_threshold,
            "classes": None if keep_classes is None else sorted(keep_classes),
            "track": track,
        }
        _write_json(json_path, summary, frames_tmp)
        return summary
    finally:
        if writer is not None:
            writer.close()
        frames_tmp.unlink(missing_ok=True)


def _write_json(json_path: Path, summary: dict, frames_tmp: Path) -> None:
    """Write ``{"summary": ..., "frames": [...]}`` streaming the frame lines; atomic via rename."""
    part = json_path.with_name(json_path.name + ".part")
    with open(part, "w", encoding="utf-8") as f, open(frames_tmp, encoding="utf-8") as lines:
        f.write('{"summary": ' + json.dumps(summary, indent=2) + ',\n"frames": [\n')
        for i, line in enumerate(lines):
            f.write((",\n" if i else "") + line.rstrip("\n"))
        f.write("\n]}\n")
    os.replace(part, json_path)
