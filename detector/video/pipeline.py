"""The engine behind ``tools/demo_video.py``: decode, detect, track, draw, encode, frame by frame, the
stages of consecutive frames overlapping on three threads (``pipelined=False``: one after another).

The detector is any callable ``detect_fn(frame) -> dict`` (``Predictor.predict`` fits), so this
module needs no model and is tested with fake detectors.
"""
from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from os import PathLike
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from detector.arrays import to_numpy
from detector.files import atomic_write
from detector.video.draw import draw_detections, draw_overlay
from detector.video.io import (
    Frame,
    FrameSource,
    VideoInfo,
    VideoReadError,
    VideoWriter,
    open_source,
)
from detector.video.stages import BackgroundSink, prefetch
from detector.video.tracking import Tracker

__all__ = ["DetectFn", "run_video"]

# detect_fn(frame np.ndarray[H, W, 3] uint8 RGB) -> {"boxes": [N, 4] xyxy frame pixels,
# "scores": [N], "labels": [N] ints, "names": N strings} (numpy arrays, lists or CPU tensors).
DetectFn = Callable[[np.ndarray], Mapping[str, Any]]

# Frame rate for sources that do not report one (image folders get `fps`, some webcams nothing).
_DEFAULT_FPS = 25.0


def _filter(det: Mapping[str, Any], score_threshold: float, classes: set[str] | None) -> dict:
    """Detections as numpy, keeping scores >= threshold and names in ``classes``."""
    boxes = to_numpy(det.get("boxes"), np.float64, (4,))
    scores = to_numpy(det.get("scores"), np.float64)
    names = [str(n) for n in det.get("names", [])]
    labels_in = det.get("labels")
    if labels_in is None:
        # No integer labels: derive stable ones from the names so the tracker can still separate classes.
        labels = np.array([sorted(set(names)).index(n) + 1 for n in names], dtype=np.int64)
    else:
        labels = to_numpy(labels_in, np.int64)
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
    view: dict[str, Any] | None = None,
    pipelined: bool = True,
    preset: str = "superfast",
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
        preset: libx264's speed / size trade-off. "superfast" (the default) encodes a 1280x720 frame in
            about 14 ms here against 20 for "veryfast" (files 25 % larger at the same ``crf``);
            "ultrafast" takes 8.5 ms for files twice the size (``docs/benchmarks.md``).
        view: how ``detect_fn`` sees each frame (model file, backend, slicing, letterbox), recorded as
            the summary's ``"view"`` so runs of the same clip can be told apart.
        pipelined: decode ahead and draw + encode behind on two more threads while ``detect_fn``
            runs (the same output; ``False``: every stage on the calling thread, one after another).

    Returns:
        The summary also written under ``"summary"`` in ``OUT.json``: ``frames``,
        ``mean_model_ms`` (detect_fn time per frame), ``end_to_end_fps`` (decode to encode),
        ``input`` / ``output`` (size, fps, codec...), ``detections`` (total kept), paths.
        ``OUT.json`` also holds ``"frames"``: per frame ``index``, ``timestamp``, ``model_ms`` and
        ``detections`` (``box`` xyxy pixels, ``score``, ``label``, ``name``, and ``track_id`` when
        tracking: an int for a confirmed track, else None). Both files appear only when the run
        completes (atomic writes): a failed run leaves neither a half video nor a half record.

    Raises:
        VideoReadError: the source cannot be opened or yields no frame.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    out_path = Path(output_path)
    json_path = out_path.with_suffix(".json")
    keep_classes = None if classes is None else {str(c) for c in classes}
    step = _FrameStep(detect_fn, score_threshold, keep_classes, (tracker or Tracker()) if track else None)

    # Per-frame records go to an unnamed side file as they come and are spliced into OUT.json at the
    # end, so a long video's record never sits in memory.
    with open_source(source, fps=fps) as frames, atomic_write(out_path) as video_tmp, \
            tempfile.TemporaryFile("w+", encoding="utf-8", dir=video_tmp.parent) as records:
        info = frames.info
        rate = info.rate or Fraction(fps).limit_denominator(1001)
        with VideoWriter(video_tmp, info.width, info.height, rate, crf=crf, preset=preset) as writer:
            bar = tqdm(total=_expected_frames(info.frame_count, max_frames), unit="frame",
                       disable=not progress, desc=out_path.name)
            with bar:
                counts = _annotate(frames, step, writer, records, max_frames, bar, pipelined)
        if counts.frames == 0:
            raise VideoReadError(source, "no frame was decoded")
        summary = _summary(info, writer, out_path, json_path, counts, step, track, pipelined)
        summary["view"] = view
        summary["encoder_preset"] = preset if writer.codec_name == "libx264" else None
        _write_record(json_path, summary, records)
    return summary


def _expected_frames(frame_count: int | None, max_frames: int | None) -> int | None:
    """The progress bar's total: the source's frame count, capped by ``max_frames``."""
    if max_frames is None:
        return frame_count
    return max_frames if frame_count is None else min(frame_count, max_frames)


class _FrameStep:
    """One frame's work: detect, filter, track, draw; keeps the running model time."""

    def __init__(self, detect_fn: DetectFn, score_threshold: float, classes: set[str] | None,
                 tracker: Tracker | None) -> None:
        self.detect_fn = detect_fn
        self.score_threshold = score_threshold
        self.classes = classes
        self.tracker = tracker

    def __call__(self, image: np.ndarray) -> tuple[dict, list[int | None] | None, float]:
        """``(detections as numpy, track ids or None, detect_fn seconds)`` for one RGB frame."""
        t0 = time.perf_counter()
        raw = self.detect_fn(image)
        seconds = time.perf_counter() - t0
        det = _filter(raw, self.score_threshold, self.classes)
        track_ids: list[int | None] | None = None
        if self.tracker is not None:
            track_ids = [None] * len(det["boxes"])
            for t in self.tracker.update(det["boxes"], det["scores"], det["labels"]):
                track_ids[t.det_index] = t.track_id
        return det, track_ids, seconds


@dataclass
class _Counts:
    frames: int = 0
    detections: int = 0
    model_s: float = 0.0
    wall_s: float = 0.0
    per_class: Counter = field(default_factory=Counter)  # detections per class name
    tracks: dict = field(default_factory=dict)  # confirmed track id -> (class name, frames seen)


def _annotate(frames: FrameSource, step: _FrameStep, writer: VideoWriter, records: TextIO,
              max_frames: int | None, bar: tqdm, pipelined: bool = True) -> _Counts:
    """Detect, draw and encode every frame; one JSON line per frame goes to ``records``.

    ``pipelined``: decoding runs ahead on one thread and drawing + encoding behind on another
    (:mod:`detector.video.stages`), while this thread runs the model and the tracker, so the stages
    of consecutive frames overlap. The frames, detections and records are the same either way."""
    counts = _Counts()
    start = time.perf_counter()

    def finish(item: tuple[Frame, dict, list[int | None] | None, float]) -> None:
        frame, det, track_ids, seconds = item
        image = draw_detections(frame.image, det["boxes"], det["scores"], det["names"], track_ids)
        counts.frames += 1
        counts.model_s += seconds
        elapsed = time.perf_counter() - start
        writer.write(draw_overlay(image, [f"model {seconds * 1000:.1f} ms", f"FPS {counts.frames / elapsed:.1f}"]))
        dets = _detection_records(det, track_ids)
        counts.detections += len(dets)
        counts.per_class.update(d["name"] for d in dets)
        for d in dets:
            if d.get("track_id") is not None:
                name, seen = counts.tracks.get(d["track_id"], (d["name"], 0))
                counts.tracks[d["track_id"]] = (name, seen + 1)
        records.write(json.dumps({"index": frame.index, "timestamp": round(frame.timestamp, 4),
                                  "model_ms": round(seconds * 1000, 3), "detections": dets}) + "\n")
        bar.update(1)

    taken = _first(frames, max_frames)
    if pipelined:
        with BackgroundSink(finish) as sink:
            for frame in prefetch(taken):
                det, track_ids, seconds = step(frame.image)
                sink.put((frame, det, track_ids, seconds))
    else:
        for frame in taken:
            finish((frame, *step(frame.image)))
    counts.wall_s = time.perf_counter() - start
    return counts


def _first(frames: Iterable[Frame], max_frames: int | None) -> Iterator[Frame]:
    """The first ``max_frames`` frames (all when ``None``), without decoding one more."""
    for taken, frame in enumerate(frames):
        if max_frames is not None and taken >= max_frames:
            return
        yield frame


def _detection_records(det: dict, track_ids: list[int | None] | None) -> list[dict[str, Any]]:
    """One frame's kept detections as JSON-ready dicts (``track_id`` only when tracking)."""
    dets = [
        {"box": [round(float(v), 2) for v in det["boxes"][i]], "score": round(float(det["scores"][i]), 4),
         "label": int(det["labels"][i]), "name": det["names"][i]}
        for i in range(len(det["boxes"]))
    ]
    if track_ids is not None:
        for d, tid in zip(dets, track_ids):
            d["track_id"] = tid
    return dets


def _summary(info: VideoInfo, writer: VideoWriter, out_path: Path, json_path: Path, counts: _Counts,
             step: _FrameStep, track: bool, pipelined: bool) -> dict[str, Any]:
    return {
        "input": info.to_dict(),
        "output": {"path": str(out_path), "json": str(json_path), "width": writer.width,
                   "height": writer.height, "fps": writer.fps, "codec": writer.codec_name,
                   "container": "mp4", "pix_fmt": "yuv420p"},
        "frames": counts.frames,
        "detections": counts.detections,
        "detections_per_class": dict(sorted(counts.per_class.items())),
        "tracks": len(counts.tracks) if track else None,
        "tracks_per_class": dict(sorted(Counter(name for name, _ in counts.tracks.values()).items())) if track else None,
        "median_track_frames": (float(np.median([seen for _, seen in counts.tracks.values()]))
                                if track and counts.tracks else None),
        "mean_model_ms": round(counts.model_s / counts.frames * 1000, 3),
        "end_to_end_fps": round(counts.frames / counts.wall_s, 3) if counts.wall_s > 0 else None,
        "wall_s": round(counts.wall_s, 3),
        "score_threshold": step.score_threshold,
        "classes": None if step.classes is None else sorted(step.classes),
        "track": track,
        "pipelined": pipelined,
    }


def _write_record(json_path: Path, summary: dict, records: TextIO) -> None:
    """Write ``{"summary": ..., "frames": [...]}``, streaming the frame lines, through ``atomic_write``."""
    records.seek(0)
    with atomic_write(json_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write('{"summary": ' + json.dumps(summary, indent=2) + ',\n"frames": [\n')
        for i, line in enumerate(records):
            f.write((",\n" if i else "") + line.rstrip("\n"))
        f.write("\n]}\n")
