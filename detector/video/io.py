"""Streaming video I/O: read frames from a file, an image folder or a webcam; write H.264 MP4.

Everything works one frame at a time, so memory stays flat however long the video is.

- :func:`open_source` returns a :class:`FrameSource`: iterate it for :class:`Frame` tuples
  ``(index, image np.ndarray[H, W, 3] uint8 RGB, timestamp seconds)``; ``.info`` holds the size,
  frame rate and frame count when the source knows them.
- :class:`VideoWriter` encodes RGB frames to a browser-playable MP4: H.264 (libx264 from PyAV's
  bundled FFmpeg), yuv420p, ``+faststart`` (index at the front, so it plays while downloading).

A file that cannot be opened raises :class:`VideoReadError` naming it; a file that breaks partway
yields the frames that decoded and then warns (:class:`VideoDecodeWarning`).
"""
from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import av
import cv2
import numpy as np

from detector.data.io import IMAGE_SUFFIXES, ImageReadError, list_images, load_image

__all__ = [
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "VideoDecodeWarning",
    "VideoFileSource",
    "VideoInfo",
    "VideoReadError",
    "VideoWriter",
    "WebcamSource",
    "open_source",
]

# Encoders tried in order; all but the last give H.264, which every browser plays in MP4.
_H264_ENCODERS = ("libx264", "libopenh264", "h264")
_FALLBACK_ENCODER = "mpeg4"


class VideoReadError(OSError):
    """A video source that cannot be opened or yields no frame; the message names it."""

    def __init__(self, source: str | int | PathLike[str], reason: str) -> None:
        super().__init__(f"cannot read video {str(source)!r}: {reason}")
        self.source = str(source)
        self.reason = reason


class VideoDecodeWarning(UserWarning):
    """A video broke partway (truncated or corrupt): the frames before the damage were kept."""


class Frame(NamedTuple):
    """One decoded frame.

    Attributes:
        index: 0-based position in the stream (after skipped unreadable images, for folders).
        image: ``np.ndarray[H, W, 3]`` uint8 RGB.
        timestamp: seconds from the start of the stream.
    """

    index: int
    image: np.ndarray
    timestamp: float


@dataclass
class VideoInfo:
    """What a source knows about itself before decoding.

    Attributes:
        source: the path or webcam index as given.
        kind: ``"file"``, ``"images"`` or ``"webcam"``.
        width, height: frame size in pixels.
        fps: frames per second, None when unknown (some webcams).
        frame_count: number of frames, None when unknown (webcams, some containers).
        rate: ``fps`` as an exact fraction (30000/1001 for NTSC), for the writer.
        codec: the stream's codec name, for files.
    """

    source: str
    kind: str
    width: int
    height: int
    fps: float | None
    frame_count: int | None
    rate: Fraction | None = None
    codec: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "kind": self.kind, "width": self.width, "height": self.height,
                "fps": self.fps, "frame_count": self.frame_count, "codec": self.codec}


class FrameSource:
    """Base class of the frame sources: an iterable of :class:`Frame` and a context manager."""

    info: VideoInfo

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file or device (idempotent)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        if self.info.frame_count is None:
            raise TypeError(f"{self.info.source!r} does not know its frame count")
        return self.info.frame_count


class VideoFileSource(FrameSource):
    """Frames of a video file, decoded with PyAV (FFmpeg).

    Raises:
        VideoReadError: the file is missing, not a video, or has no video stream.
    """

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoReadError(path, "file not found")
        try:
            self._container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
            raise VideoReadError(path, f"not a readable video ({type(err).__name__}: {err})") from err
        if not self._container.streams.video:
            self._container.close()
            raise VideoReadError(path, "the file has no video stream")
        stream = self._container.streams.video[0]
        # Frame-level threading decodes several frames at once: ~2x faster on multi-core machines.
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        rate = Fraction(rate) if rate else None
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            self._container.close()
            raise VideoReadError(path, "the video stream has no frame size")
        self._stream = stream
        self.info = VideoInfo(
            source=str(path), kind="file", width=width, height=height,
            fps=float(rate) if rate else None, frame_count=int(stream.frames) or None, rate=rate,
            codec=stream.codec_context.name,
        )

    def __iter__(self) -> Iterator[Frame]:
        fps = self.info.fps or 25.0
        index = 0
        bad_packets = 0
        last_error: Exception | None = None
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.FFmpegError, EOFError) as err:
                # The container itself is broken here (truncated index, garbage): nothing follows.
                last_error = err
                break
            try:
                # Decoding packet by packet lets a damaged packet be skipped instead of ending the
                # stream; demux always moves forward, so this cannot loop forever.
                decoded = packet.decode()
            except (av.FFmpegError, EOFError) as err:
                bad_packets += 1
                last_error = err
                continue
            for vf in decoded:
                image = vf.to_ndarray(format="rgb24")
                ts = float(vf.time) if vf.time is not None else index / fps
                yield Frame(index, image, ts)
                index += 1
        if index == 0:
            reason = "no frame could be decoded"
            raise VideoReadError(self.path, reason if last_error is None else f"{reason} ({last_error})")
        expected = self.info.frame_count
        if last_error is not None or (expected and index < expected):
            # A truncated file often decodes cleanly up to where the data ends: compare with the header.
            warnings.warn(
                f"{str(self.path)!r} is truncated or corrupt: {index}"
                f"{f' of {expected}' if expected else ''} frames decoded"
                f"{f', {bad_packets} damaged packets skipped' if bad_packets else ''}"
                f"{f' ({last_error})' if last_error is not None else ''}",
                VideoDecodeWarning, stacklevel=2,
            )

    def close(self) -> None:
        self._container.close()


def _natural_key(path: Path) -> list:
    """Sort ``frame2.png`` before ``frame10.png``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


class ImageFolderSource(FrameSource):
    """The images of a folder as frames, in natural name order (``2.png`` before ``10.png``).

    The frame size is the first image's; an image of another size is resized to it, and an
    unreadable one is skipped with a warning (the stream goes on).

    Args:
        folder: a directory holding image files (``detector.data.io.IMAGE_SUFFIXES``; subfolders are
            ignored).
        fps: the frame rate the images are played at.

    Raises:
        VideoReadError: the folder is missing or holds no readable image.
    """

    def __init__(self, folder: str | PathLike[str], fps: float = 25.0) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise VideoReadError(folder, "not a directory")
        self.files = sorted(list_images(self.folder, recursive=False), key=_natural_key)
        first = None
        for p in self.files:
            try:
                first = load_image(p)
                break
            except ImageReadError:
                continue
        if first is None:
            raise VideoReadError(folder, f"no readable image ({', '.join(IMAGE_SUFFIXES)})")
        rate = Fraction(fps).limit_denominator(1001)
        self.info = VideoInfo(
            source=str(folder), kind="images", width=first.shape[1], height=first.shape[0],
            fps=float(fps), frame_count=len(self.files), rate=rate,
        )

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        size = (self.info.width, self.info.height)
        for p in self.files:
            try:
                image = load_image(p)
            except ImageReadError as err:
                warnings.warn(f"skipping frame: {err}", VideoDecodeWarning, stacklevel=2)
                continue
            if (image.shape[1], image.shape[0]) != size:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            yield Frame(index, image, index / self.info.fps)
            index += 1


class WebcamSource(FrameSource):
    """Frames from a camera through OpenCV (``cv2.VideoCapture(index)``), until it stops.

    Timestamps are wall-clock seconds since the first frame; ``frame_count`` is None.

    Raises:
        VideoReadError: the camera cannot be opened or gives no frame.
    """

    def __init__(self, index: int) -> None:
        self.index = int(index)
        self._cap = cv2.VideoCapture(self.index)
        if not self._cap.isOpened():
            self._cap.release()
            raise VideoReadError(self.index, "cannot open this webcam index")
        # Read one frame now: some drivers only report the true size after the first grab.
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            self._cap.release()
            raise VideoReadError(self.index, "the webcam gave no frame")
        self._first = bgr
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        fps_known = 0.0 < fps < 1000.0
        self.info = VideoInfo(
            source=str(self.index), kind="webcam", width=bgr.shape[1], height=bgr.shape[0],
            fps=fps if fps_known else None, frame_count=None,
            rate=Fraction(fps).limit_denominator(1001) if fps_known else None,
        )

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        index = 0
        bgr = self._first
        while bgr is not None:
            yield Frame(index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.monotonic() - start)
            index += 1
            ok, bgr = self._cap.read()
            if not ok:
                break

    def close(self) -> None:
        self._cap.release()


def open_source(source: str | int | PathLike[str], fps: float = 25.0) -> FrameSource:
    """Open a video file, an image folder, or a webcam (an int, or a string of digits).

    Args:
        source: path to a video file or a folder of frames, or a webcam index.
        fps: frame rate given to image folders (video files and webcams report their own).
    """
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit() and not Path(source).exists()):
        return WebcamSource(int(source))
    path = Path(source)
    if path.is_dir():
        return ImageFolderSource(path, fps=fps)
    return VideoFileSource(path)


class VideoWriter:
    """Encode RGB frames one at a time into an MP4 that plays in browsers.

    H.264 (libx264, ``crf`` quality, ``preset`` speed) in yuv420p with the ``+faststart`` index;
    if PyAV's FFmpeg has no H.264 encoder, MPEG-4 Part 2 is used with a warning (plays in VLC, not
    in every browser). yuv420p needs even sides, so an odd width or height is padded by one
    replicated pixel: ``.width`` / ``.height`` give the size actually written.

    Args:
        path: output file (``.mp4``; parent folders are created).
        width, height: the input frames' size.
        fps: frame rate (a float, or an exact ``Fraction`` such as 30000/1001).
        crf: libx264 constant rate factor, 0 (lossless) .. 51; 23 is FFmpeg's default.
        preset: libx264 speed / size trade-off ("ultrafast" .. "veryslow").
        codec: force an encoder; None picks the first available of libx264, libopenh264, h264.

    Example::

        with VideoWriter("out.mp4", 1280, 720, 25) as w:
            for frame in frames:
                w.write(frame)
    """

    def __init__(
        self,
        path: str | PathLike[str],
        width: int,
        height: int,
        fps: float | Fraction,
        crf: int = 23,
        preset: str = "veryfast",
        codec: str | None = None,
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.in_width, self.in_height = int(width), int(height)
        self.width, self.height = self.in_width + self.in_width % 2, self.in_height + self.in_height % 2
        self.rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
        self.codec_name = codec or _pick_encoder()
        if self.codec_name not in _H264_ENCODERS:
            warnings.warn(f"no H.264 encoder in PyAV's FFmpeg; writing {self.codec_name} "
                          "(may not play in browsers)", stacklevel=2)
        self._container = av.open(str(self.path), mode="w", format="mp4",
                                  container_options={"movflags": "+faststart"})
        try:
            options = {"crf": str(crf), "preset": preset} if self.codec_name == "libx264" else {}
            self._stream = self._container.add_stream(self.codec_name, rate=self.rate, options=options)
            self._stream.width, self._stream.height = self.width, self.height
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = 1 / self.rate
        except Exception:
            self._container.close()
            raise
        self.frames_written = 0
        self._closed = False

    @property
    def fps(self) -> float:
        return float(self.rate)

    def write(self, image: np.ndarray) -> None:
        """Encode one ``np.ndarray[H, W, 3]`` uint8 RGB frame of the size given at construction.

        A frame of another size is resized to it (a folder of mixed-size images, say).
        """
        if self._closed:
            raise ValueError(f"{str(self.path)!r} is closed")
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB frame, got shape {arr.shape} dtype {arr.dtype}")
        if (arr.shape[1], arr.shape[0]) != (self.in_width, self.in_height):
            arr = cv2.resize(arr, (self.in_width, self.in_height), interpolation=cv2.INTER_AREA)
        if (self.width, self.height) != (self.in_width, self.in_height):
            arr = np.pad(arr, ((0, self.height - self.in_height), (0, self.width - self.in_width), (0, 0)),
                         mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24").reformat(format="yuv420p")
        vf.pts = self.frames_written
        vf.time_base = 1 / self.rate
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pick_encoder() -> str:
    for name in (*_H264_ENCODERS, _FALLBACK_ENCODER):
        try:
            av.codec.Codec(name, "w")
        except (av.FFmpegError, ValueError, LookupError):
            continue
        return name
    raise RuntimeError("PyAV's FFmpeg has neither an H.264 nor an MPEG-4 encoder")
