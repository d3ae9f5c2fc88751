"""tools/demo.py end to end on a tiny budget: every step runs, and every file it announces exists."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import torch

ROOT = Path(__file__).resolve().parents[2]


def announced(stdout: str, label: str) -> list[Path]:
    """The first path of every summary line that starts with ``label``."""
    return [Path(m) for m in re.findall(rf"^{label}\s+(\S+?):?(?:\s|$)", stdout, flags=re.MULTILINE)]


def frames_of(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_demo_on_a_tiny_budget(tmp_path: Path) -> None:
    data, run_dir = tmp_path / "synthetic", tmp_path / "run"
    command = [sys.executable, "tools/demo.py", "--data", str(data), "--run-dir", str(run_dir),
               "--train-images", "32", "--val-images", "8", "--epochs", "1", "--image-size", "128"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "=== demo finished" in out
    # No COCO model in this (empty) hub cache: the demo says how to get it and goes on.
    assert "skipping the COCO model on the dashcam clip" in out and "tools/zoo.py download" in out

    # The synthetic set at the requested size.
    assert len(json.loads((data / "train.json").read_text())["images"]) == 32
    assert len(json.loads((data / "val.json").read_text())["images"]) == 8

    # The checkpoint holds a model trained at the requested input size.
    (checkpoint,) = announced(out, "checkpoint")
    assert checkpoint == run_dir / "checkpoints" / "best.ckpt"
    meta = torch.load(checkpoint, map_location="cpu", weights_only=True)["detector"]
    assert meta["config"]["image_size"] in (128, [128, 128], (128, 128))

    (metrics_path,) = announced(out, "metrics")
    metrics = json.loads(metrics_path.read_text())
    assert metrics["num_images"] == 8 and 0.0 <= metrics["AP"] <= 1.0
    (plots,) = announced(out, "plots")
    assert (plots / "pr_all.png").is_file()

    # Pictures: the glob 00000[0-9].jpg picks val images 1..8, each drawn, plus their detections.
    (pictures,) = announced(out, "pictures")
    assert len(list(pictures.glob("*.jpg"))) == 8
    assert (pictures / "detections.json").is_file()

    # The videos with their JSON: the 8 val images as a slide show, and the shipped 38-frame clip drawn
    # by the quickstart model and by the shipped driving model (with tracking).
    videos = announced(out, "video")
    assert videos == [run_dir / "demo_synthetic.mp4", run_dir / "demo_dashcam.mp4",
                      run_dir / "demo_dashcam_driving.mp4"]
    for video, frames in zip(videos, (8, 38, 38)):
        assert frames_of(video) == frames
        summary = json.loads(video.with_suffix(".json").read_text())["summary"]
        assert summary["frames"] == frames
    assert json.loads(videos[1].with_suffix(".json").read_text())["summary"]["track"] is True
    # The driving clip runs on the fast path: the driving model exported to int8 ONNX, on OpenVINO (installed
    # with the dev extras), decoding and encoding on their own threads.
    summary = json.loads(videos[2].with_suffix(".json").read_text())["summary"]
    assert summary["view"]["backend"] == "openvino" and summary["pipelined"] is True
    assert summary["view"]["checkpoint"].endswith("carla_ssdlite_mobilenet_v2_pretrained.int8.onnx")
