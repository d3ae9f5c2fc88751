"""The video pipeline's overlapping stages: order kept, errors raised where the caller is, nothing
left running; and a pipelined run writes what a serial one writes."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

import detector.video.pipeline as pipeline
from detector.video.pipeline import run_video
from detector.video.stages import BackgroundSink, prefetch
from detector.video.tracking import Tracker

ROOT = Path(__file__).resolve().parents[2]
DASHCAM = ROOT / "data" / "samples" / "dashcam" / "test_video.mp4"  # shipped in the repository


def test_prefetch_keeps_order_and_raises_the_producers_error() -> None:
    assert list(prefetch(range(100), depth=3)) == list(range(100))

    def broken():
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [1, 2]


def test_prefetch_stops_its_thread_when_the_consumer_stops() -> None:
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    for item in prefetch(endless(), depth=2):
        if item == 5:
            break
    assert threading.active_count() == before  # joined, not left running
    assert len(produced) <= 5 + 1 + 2 + 1  # at most the queue's depth (and one in hand) ahead


def test_background_sink_consumes_in_order_and_reports_errors() -> None:
    seen = []

    def slow(item: int) -> None:
        time.sleep(0.001 * (item % 3))
        seen.append(item)

    with BackgroundSink(slow, depth=2) as sink:
        for i in range(30):
            sink.put(i)
    assert seen == list(range(30))

    def fails_at_3(item: int) -> None:
        if item == 3:
            raise ValueError("encoder failed")

    with pytest.raises(ValueError, match="encoder failed"):
        with BackgroundSink(fails_at_3) as sink:
            for i in range(100):
                sink.put(i)


def content_detector(frame: np.ndarray) -> dict:
    """Boxes from the frame's own pixels (the brightest 64-pixel block of each half), so a frame paired
    with another frame's detections would show."""
    h, w = frame.shape[:2]
    boxes, scores = [], []
    for x0 in (0, w // 2):
        half = frame[: h - h % 64, x0: x0 + w // 2 - (w // 2) % 64].mean(axis=2)
        blocks = half.reshape(half.shape[0] // 64, 64, half.shape[1] // 64, 64).mean(axis=(1, 3))
        y, x = np.unravel_index(np.argmax(blocks), blocks.shape)
        boxes.append([x0 + 64 * x, 64 * y, x0 + 64 * x + 64, 64 * y + 64])
        scores.append(float(blocks.max()) / 255)
    return {"boxes": np.array(boxes, np.float32), "scores": np.array(scores, np.float32), "labels": [1, 2],
            "names": ["left", "right"]}


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_pipelined_run_writes_what_a_serial_run_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The overlay's text is each run's own timing; without it the encoder gets the same pictures.
    monkeypatch.setattr(pipeline, "draw_overlay", lambda image, lines: image)
    outputs = {}
    for pipelined in (False, True):
        out = tmp_path / f"{pipelined}.mp4"
        summary = run_video(DASHCAM, out, content_detector, score_threshold=0.0, track=True, max_frames=20,
                            tracker=Tracker(min_hits=1), progress=False, pipelined=pipelined)
        assert summary["frames"] == 20 and summary["pipelined"] is pipelined
        record = json.loads(out.with_suffix(".json").read_text())
        outputs[pipelined] = ([(f["index"], f["timestamp"], f["detections"]) for f in record["frames"]], decoded(out))
    (serial_frames, serial_video), (piped_frames, piped_video) = outputs[False], outputs[True]
    assert piped_frames == serial_frames
    assert [index for index, _, _ in piped_frames] == list(range(20))
    assert len(piped_video) == len(serial_video) == 20
    for a, b in zip(piped_video, serial_video):
        np.testing.assert_array_equal(a, b)
