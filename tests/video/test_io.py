"""Video I/O and the video demo engine, checked by decoding the outputs again with PyAV."""
from __future__ import annotations

import json
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from detector.video.io import (
    ImageFolderSource,
    VideoDecodeWarning,
    VideoReadError,
    VideoWriter,
    open_source,
)
from detector.video.pipeline import run_video

ROOT = Path(__file__).resolve().parents[2]
DASHCAM = ROOT / "data" / "samples" / "dashcam" / "test_video.mp4"  # shipped in the repository


def probe(path: Path) -> tuple[int, int, int, Fraction, str, str]:
    """(decoded frames, width, height, average rate, codec, pix_fmt) by a full decode."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return n, s.width, s.height, s.average_rate, s.codec_context.name, s.codec_context.pix_fmt


def synthetic_frames(n: int, h: int = 96, w: int = 128) -> list[np.ndarray]:
    """A bright square moving right over a dark gradient."""
    frames = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 2] = np.linspace(0, 80, w, dtype=np.uint8)[None, :]
        x = 4 + 6 * i
        img[30:60, x:x + 30] = (250, 240, 40)
        frames.append(img)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float | Fraction = 10) -> None:
    h, w = frames[0].shape[:2]
    with VideoWriter(path, w, h, fps, crf=18) as vw:
        for f in frames:
            vw.write(f)


# --- writer and sources -----------------------------------------------------------------------

def test_writer_roundtrip_h264_mp4(tmp_path: Path) -> None:
    frames = synthetic_frames(12)
    out = tmp_path / "sub" / "syn.mp4"
    write_video(out, frames, fps=Fraction(30000, 1001))
    n, w, h, rate, codec, pix = probe(out)
    assert (n, w, h, rate, codec, pix) == (12, 128, 96, Fraction(30000, 1001), "h264", "yuv420p")
    data = out.read_bytes()
    assert data[4:8] == b"ftyp" and 0 < data.find(b"moov") < data.find(b"mdat"), "faststart MP4"
    with open_source(out) as src:
        assert (src.info.width, src.info.height, src.info.frame_count) == (128, 96, 12)
        assert src.info.fps == pytest.approx(29.97, abs=1e-3)
        got = list(src)
    assert [f.index for f in got] == list(range(12))
    np.testing.assert_allclose([f.timestamp for f in got], np.arange(12) * 1001 / 30000, atol=1e-3)
    # Lossy, but the moving square must be where it was drawn.
    for f, ref in zip(got, frames):
        assert f.image.shape == (96, 128, 3) and f.image.dtype == np.uint8
        assert np.abs(f.image.astype(int) - ref.astype(int)).mean() < 4


def test_writer_pads_odd_sizes_to_even(tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    write_video(out, [np.full((49, 65, 3), 120, np.uint8)] * 3, fps=25)
    n, w, h, rate, _, _ = probe(out)
    assert (n, w, h, rate) == (3, 66, 50, 25)


def test_random_bytes_raise_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(20_000))
    with pytest.raises(VideoReadError, match="noise.mp4"):
        with open_source(bad) as src:
            list(src)
    with pytest.raises(VideoReadError, match="missing.mp4"):
        open_source(tmp_path / "missing.mp4")


def _decode_with_warnings(path: Path) -> tuple[int | None, list[str], str | None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with open_source(path) as src:
                n = sum(1 for _ in src)
        except VideoReadError as err:
            return None, [], str(err)
    return n, [str(w.message) for w in caught if issubclass(w.category, VideoDecodeWarning)], None


def test_truncated_synthetic_video_gives_its_first_frames_and_a_warning(tmp_path: Path) -> None:
    full = tmp_path / "full.mp4"
    # Noise keeps every frame large, so a cut at 60% falls well after the first frames.
    rng = np.random.default_rng(0)
    write_video(full, [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(20)])
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    n, warns, err = _decode_with_warnings(cut)
    assert err is None and n is not None and 0 < n < 20
    assert warns and "cut.mp4" in warns[0] and "of 20" in warns[0]


@pytest.mark.parametrize("fraction", [0.6, 0.05, 0.0005])
def test_truncated_real_video_never_hangs(tmp_path: Path, fraction: float) -> None:
    data = DASHCAM.read_bytes()
    cut = tmp_path / f"dashcam_{fraction}.mp4"
    cut.write_bytes(data[: int(len(data) * fraction)])
    n, warns, err = _decode_with_warnings(cut)
    if err is not None:
        assert cut.name in err  # nothing decodable: a clear error naming the file
    else:
        assert 0 < n < 38 and warns and cut.name in warns[0]
    if fraction == 0.6:
        assert err is None, "60% of the clip holds decodable frames"


def test_image_folder_source_natural_order_and_bad_files(tmp_path: Path) -> None:
    frames = synthetic_frames(11, h=40, w=60)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"frame{i}.png")
    (tmp_path / "frame5.png").write_bytes(b"not a png")  # skipped with a warning
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(VideoDecodeWarning, match="frame5.png"):
        src = open_source(tmp_path, fps=5)
        assert isinstance(src, ImageFolderSource)
        got = list(src)
    assert (src.info.width, src.info.height, src.info.fps) == (60, 40, 5.0)
    assert len(got) == 10
    # frame10 comes after frame9 (natural order), and frame5 is gone.
    expected = [frames[i] for i in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10)]
    for f, ref in zip(got, expected):
        np.testing.assert_array_equal(f.image, ref)
    assert [f.timestamp for f in got[:3]] == [0.0, 0.2, 0.4]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoReadError, match="empty"):
        open_source(empty)


def test_unavailable_webcam_raises() -> None:
    with pytest.raises(VideoReadError, match="99"):
        open_source(99)


# --- the demo engine ----------------------------------------------------------------------------

def fixed_box_detector(frame: np.ndarray) -> dict:
    """Always one "car" in the centre quarter, plus a low-score "person" and a "dog"."""
    h, w = frame.shape[:2]
    return {
        "boxes": np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4], [0, 0, 10, 10], [5, 5, 30, 30]], np.float32),
        "scores": np.array([0.9, 0.2, 0.8], np.float32),
        "labels": np.array([3, 1, 18]),
        "names": ["car", "person", "dog"],
    }


def test_run_video_on_dashcam_clip(tmp_path: Path) -> None:
    out = tmp_path / "demo" / "OUT.mp4"
    summary = run_video(DASHCAM, out, fixed_box_detector, classes=["car", "person"], score_threshold=0.4,
                        max_frames=12, progress=False)
    n, w, h, rate, codec, pix = probe(out)
    assert (n, w, h, rate, codec, pix) == (12, 1280, 720, 25, "h264", "yuv420p")
    record = json.loads((tmp_path / "demo" / "OUT.json").read_text())
    assert record["summary"] == summary
    assert summary["frames"] == 12 and summary["input"]["frame_count"] == 38
    assert (summary["input"]["width"], summary["input"]["height"], summary["input"]["fps"]) == (1280, 720, 25.0)
    assert (summary["output"]["width"], summary["output"]["height"], summary["output"]["fps"]) == (1280, 720, 25.0)
    assert summary["output"]["codec"] == "libx264"
    assert summary["mean_model_ms"] >= 0 and summary["end_to_end_fps"] > 0
    assert [f["index"] for f in record["frames"]] == list(range(12))
    # Only the car passes both the score threshold and the class filter.
    for f in record["frames"]:
        assert [(d["name"], d["box"], d["label"]) for d in f["detections"]] == [("car", [320, 180, 960, 540], 3)]
        assert "track_id" not in f["detections"][0]
    assert record["frames"][5]["timestamp"] == pytest.approx(0.2)
    # The box is drawn: its left edge differs from the input frame, the far corner does not.
    with av.open(str(out)) as c_out, av.open(str(DASHCAM)) as c_in:
        drawn = next(iter(c_out.decode(video=0))).to_ndarray(format="rgb24").astype(int)
        orig = next(iter(c_in.decode(video=0))).to_ndarray(format="rgb24").astype(int)
    assert np.abs(drawn[300:420, 318:323] - orig[300:420, 318:323]).mean() > 40
    assert np.abs(drawn[650:700, 1150:1250] - orig[650:700, 1150:1250]).mean() < 8


def test_run_video_with_tracking_on_synthetic_frames(tmp_path: Path) -> None:
    frames = synthetic_frames(15)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:04d}.png")

    def square_detector(frame: np.ndarray) -> dict:
        # Finds the bright square itself, so the tracker sees a real moving object.
        ys, xs = np.nonzero((frame[..., 0] > 200) & (frame[..., 1] > 200))
        return {"boxes": [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], "scores": [0.95], "labels": [7],
                "names": ["square"]}

    out = tmp_path / "tracked.mp4"
    summary = run_video(folder, out, square_detector, track=True, fps=12, progress=False)
    n, w, h, rate, codec, _ = probe(out)
    assert (n, w, h, rate, codec) == (15, 128, 96, 12, "h264")
    record = json.loads(out.with_suffix(".json").read_text())
    assert summary["frames"] == 15 and summary["track"] is True and summary["detections"] == 15
    ids = [f["detections"][0]["track_id"] for f in record["frames"]]
    assert ids == [1] * 15
    assert summary["detections_per_class"] == {"square": 15}
    assert (summary["tracks"], summary["tracks_per_class"], summary["median_track_frames"]) == (1, {"square": 1}, 15.0)
    assert record["frames"][3]["detections"][0]["box"] == [22, 30, 52, 60]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.part"))


def test_run_video_rejects_bad_detector_output(tmp_path: Path) -> None:
    src = tmp_path / "in.mp4"
    write_video(src, synthetic_frames(3))
    with pytest.raises(ValueError, match="2 scores"):
        run_video(src, tmp_path / "o.mp4", lambda f: {"boxes": [[0, 0, 1, 1]], "scores": [0.5, 0.4],
                                                      "labels": [1], "names": ["a"]}, progress=False)
    summary = run_video(src, tmp_path / "none.mp4", lambda f: {"boxes": np.zeros((0, 4)), "scores": [],
                                                               "labels": [], "names": []}, progress=False)
    assert summary["frames"] == 3 and summary["detections"] == 0
    assert summary["detections_per_class"] == {} and summary["tracks"] is None  # no tracking asked for


def test_failed_run_leaves_no_partial_files(tmp_path: Path) -> None:
    src = tmp_path / "in.mp4"
    write_video(src, synthetic_frames(4))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "o.mp4").write_bytes(b"previous run")
    calls = []

    def breaks_on_third_frame(frame: np.ndarray) -> dict:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("detector crashed")
        return {"boxes": np.zeros((0, 4)), "scores": [], "labels": [], "names": []}

    with pytest.raises(RuntimeError, match="detector crashed"):
        run_video(src, out_dir / "o.mp4", breaks_on_third_frame, progress=False)
    # The previous video is untouched, no record was written, and no temporary file is left.
    assert sorted(p.name for p in out_dir.iterdir()) == ["o.mp4"]
    assert (out_dir / "o.mp4").read_bytes() == b"previous run"


def test_demo_video_cli_with_a_stub_predictor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    script = ROOT / "tools" / "demo_video.py"
    spec = importlib.util.spec_from_file_location("demo_video_cli", script)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    from types import SimpleNamespace

    from detector.slicing import FrameView

    monkeypatch.setattr(cli, "load_predictor", lambda checkpoint, backend, device, **options: SimpleNamespace(
        predict=fixed_box_detector, view=FrameView().override(**options)))
    src = tmp_path / "in.mp4"
    write_video(src, synthetic_frames(6), fps=8)
    out = tmp_path / "OUT.mp4"
    rc = cli.main(["--checkpoint", "unused.pt", "--input", str(src), "--output", str(out), "--track",
                   "--classes", "car,dog", "--max-frames", "4", "--no-progress"])
    assert rc == 0
    assert probe(out)[:4] == (4, 128, 96, 8)
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert printed["frames"] == 4 and set(printed) == {"frames", "mean_model_ms", "end_to_end_fps", "pipelined", "view"}
    assert printed["view"] == {"checkpoint": "unused.pt", "backend": "torch", "letterbox": False, "slice": False}
    # The view is recorded (issue #39): a sliced run says so in its summary.
    assert cli.main(["--checkpoint", "unused.pt", "--input", str(src), "--output", str(tmp_path / "S.mp4"), "--slice",
                     "--slice-overlap", "0.3", "--max-frames", "2", "--no-progress"]) == 0
    view = json.loads((tmp_path / "S.json").read_text())["summary"]["view"]
    assert view["slice"] is True and view["slice_overlap"] == 0.3 and view["slice_full_frame"] is True
    capsys.readouterr()
    frames = json.loads(out.with_suffix(".json").read_text())["frames"]
    assert [[(d["name"], d["track_id"]) for d in f["detections"]] for f in frames] == [[("car", 1), ("dog", 2)]] * 4
    assert cli.main(["--checkpoint", "x", "--input", str(tmp_path / "nope.mp4"), "--output", str(out)]) == 1
