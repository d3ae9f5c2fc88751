"""The quickstart, as `make demo` runs it: synthetic data -> train on the CPU -> evaluate -> pictures
-> demo videos (the synthetic val set as a slide show, and the dashcam clip shipped in
data/samples/dashcam/, drawn by the quickstart model and by the driving model shipped in the zoo,
TF's pretrained SSDLite fine-tuned on CARLA's dashcam frames, exported to int8 ONNX for the clip; with torchvision's COCO model too when it is in the local zoo
cache: cars, trucks, buses and people on the real clip). Each step is one of the project's own tools, printed before it runs, so you
can rerun any of them by hand.

    python tools/demo.py [--run-dir runs/quickstart] [--retrain]
        [--train-images 1000] [--val-images 200] [--epochs N] [--image-size N]

--epochs and --image-size override configs/quickstart.yaml (a shorter or smaller first run); the
figures in the README are for the defaults.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from detector.zoo import get_zoo_model

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "quickstart.yaml"
DASHCAM = REPO / "data" / "samples" / "dashcam" / "test_video.mp4"
COCO_MODEL = "ssdlite320_mobilenet_v3_large_coco"
# Shipped in the package, no download: TF's SSDLite-MobileNetV2 (real COCO/VOC features) fine-tuned on CARLA.
DRIVING_MODEL = "carla_ssdlite_mobilenet_v2_pretrained"


def run(args: list[str]) -> None:
    print(f"\n$ python {shlex.join(args)}", flush=True)
    done = subprocess.run([sys.executable, *args], cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"demo: step failed (exit {done.returncode}): python {shlex.join(args)}")


def train_overrides(args: argparse.Namespace, data: Path, run_dir: Path) -> list[str]:
    """``tools/train.py`` flags: the data and run folders, plus --epochs / --image-size when given."""
    flags = [f"--trainer.default_root_dir={run_dir}",
             f"--data.train_images={data}/train", f"--data.train_annotations={data}/train.json",
             f"--data.val_images={data}/val", f"--data.val_annotations={data}/val.json"]
    if args.epochs is not None:
        # Validate within the shorter run too, so that best.ckpt exists at its end.
        every = int(yaml.safe_load(CONFIG.read_text())["trainer"]["check_val_every_n_epoch"])
        flags += [f"--trainer.max_epochs={args.epochs}", f"--trainer.check_val_every_n_epoch={min(every, args.epochs)}"]
    if args.image_size is not None:
        flags.append(f"--data.image_size={args.image_size}")
    return flags


def coco_dashcam(run_dir: Path) -> list[Path]:
    """The COCO model on the dashcam clip, when its file is in the zoo cache (the demo downloads nothing)."""
    cached = get_zoo_model(COCO_MODEL).cache_path
    if not cached.is_file():
        print(f"\ndemo: skipping the COCO model on the dashcam clip: {cached} is not there. "
              f"`python tools/zoo.py download {COCO_MODEL}` fetches it (docs/zoo.md); the demo goes on.")
        return []
    video = run_dir / "demo_dashcam_coco.mp4"
    run(["tools/demo_video.py", "--checkpoint", f"zoo:{COCO_MODEL}", "--input", str(DASHCAM.relative_to(REPO)),
         "--output", str(video), "--classes", "car,truck,bus,person", "--score-threshold", "0.4", "--track"])
    return [video]


def fast_backend() -> str:
    """OpenVINO where it is installed (the dev install has it: the fastest int8 runtime measured here),
    else ONNX Runtime."""
    return "openvino" if importlib.util.find_spec("openvino") is not None else "onnx"


def driving_int8_export(run_dir: Path) -> Path | None:
    """The driving model exported to int8 ONNX (about 20 s), calibrated on every other frame of the
    dashcam clip; ``None`` (the eager model is used, and named) when the export fails."""
    fp32 = run_dir / "driving" / f"{DRIVING_MODEL}.onnx"
    int8 = fp32.with_name(f"{DRIVING_MODEL}.int8.onnx")  # tools/export.py's name for the int8 file
    if (REPO / int8).is_file():
        print(f"demo: using {int8}")
        return int8
    calibration = REPO / run_dir / "driving" / "calibration"
    if not any(calibration.glob("*.jpg")):
        from PIL import Image

        from detector.video.io import VideoFileSource

        calibration.mkdir(parents=True, exist_ok=True)
        with VideoFileSource(DASHCAM) as frames:
            for frame in frames:
                if frame.index % 2 == 0:
                    Image.fromarray(frame.image).save(calibration / f"{frame.index:04d}.jpg", quality=95)
    args = ["tools/export.py", "--checkpoint", f"zoo:{DRIVING_MODEL}", "--output", str(fp32),
            "--dynamic-batch", "--int8", "--calibration-images", str(calibration)]
    print(f"\n$ python {shlex.join(args)}", flush=True)
    if subprocess.run([sys.executable, *args], cwd=REPO).returncode != 0 or not (REPO / int8).is_file():
        print(f"demo: the int8 export failed; the driving clip is drawn by the eager model zoo:{DRIVING_MODEL} instead")
        return None
    return int8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"), help="synthetic set folder (made if absent)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"), help="where the run is written")
    parser.add_argument("--retrain", action="store_true", help="train again even if a checkpoint exists")
    parser.add_argument("--train-images", type=int, default=1000, help="synthetic training images, when the set is made")
    parser.add_argument("--val-images", type=int, default=200, help="synthetic validation images, when the set is made")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the config's)")
    parser.add_argument("--image-size", type=int, help="network input side in pixels (default: the config's)")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    data, run_dir = args.data, args.run_dir
    checkpoint = run_dir / "checkpoints" / "best.ckpt"

    if not (REPO / data / "train.json").is_file():
        run(["tools/make_synthetic.py", "--output", str(data), "--train", str(args.train_images),
             "--val", str(args.val_images), "--seed", "0"])
    else:
        print(f"demo: using the synthetic set in {data}/")

    if args.retrain or not (REPO / checkpoint).is_file():
        run(["tools/train.py", "fit", "--config", str(CONFIG.relative_to(REPO)), *train_overrides(args, data, run_dir)])
    else:
        print(f"demo: {checkpoint} exists, skipping training (pass --retrain to train again)")

    eval_dir = run_dir / "eval"
    run(["tools/eval.py", "--checkpoint", str(checkpoint), "--images", f"{data}/val",
         "--annotations", f"{data}/val.json", "--output", str(eval_dir / "metrics.json"),
         "--plots", str(eval_dir / "plots")])
    metrics = json.loads((REPO / eval_dir / "metrics.json").read_text())

    predictions = run_dir / "predictions"
    run(["tools/predict.py", "--checkpoint", str(checkpoint), "--input", f"{data}/val/00000[0-9].jpg",
         "--output", str(predictions), "--score-threshold", "0.4"])

    videos = [run_dir / "demo_synthetic.mp4", run_dir / "demo_dashcam.mp4"]
    # The synthetic val images played as a slide show at 2 frames per second.
    run(["tools/demo_video.py", "--checkpoint", str(checkpoint), "--input", f"{data}/val",
         "--output", str(videos[0]), "--fps", "2", "--max-frames", "40"])
    run(["tools/demo_video.py", "--checkpoint", str(checkpoint), "--input", str(DASHCAM.relative_to(REPO)),
         "--output", str(videos[1]), "--track"])
    videos.append(run_dir / "demo_dashcam_driving.mp4")
    # The driving model on its fast path: int8 ONNX on OpenVINO (ONNX Runtime without it), its AP within a
    # point of the fp32 model's on real KITTI frames (docs/benchmarks.md); the eager model only when the
    # export fails. libx264's ultrafast preset: encoding was the slowest stage.
    int8 = driving_int8_export(run_dir)
    model = ["--checkpoint", str(int8), "--backend", fast_backend()] if int8 else ["--checkpoint", f"zoo:{DRIVING_MODEL}"]
    run(["tools/demo_video.py", *model, "--input", str(DASHCAM.relative_to(REPO)),
         "--output", str(videos[-1]), "--score-threshold", "0.4", "--track", "--encoder-preset", "ultrafast"])
    videos += coco_dashcam(run_dir)

    minutes = (time.time() - started) / 60
    print(f"\n=== demo finished in {minutes:.1f} min ===")
    print(f"checkpoint   {checkpoint} (and last.ckpt beside it; logs in {run_dir}/csv, {run_dir}/tensorboard)")
    print(f"metrics      {eval_dir / 'metrics.json'}: mAP@[.5:.95] {metrics['AP']:.3f}, mAP@.5 {metrics['AP50']:.3f}")
    print(f"plots        {eval_dir / 'plots'}/ (precision-recall curves, best and worst images)")
    print(f"pictures     {predictions}/ (detections drawn, detections.json)")
    for video in videos:
        print(f"video        {video} (summary in {video.with_suffix('.json')})")


if __name__ == "__main__":
    main()
