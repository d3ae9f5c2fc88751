"""The quickstart, as `make demo` runs it: synthetic data -> train on the CPU -> evaluate -> pictures
-> demo videos. Each step is one of the project's own tools, printed before it runs, so you can
rerun any of them by hand.

    python tools/demo.py [--run-dir runs/quickstart] [--retrain]
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DASHCAM = REPO.parent / "shared" / "data" / "udacity-vehicle-detection" / "test_video.mp4"


def run(args: list[str]) -> None:
    command = [sys.executable, *args]
    print(f"\n$ python {shlex.join(args)}", flush=True)
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"demo: step failed (exit {done.returncode}): python {shlex.join(args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic", help="synthetic set folder (made if absent)")
    parser.add_argument("--run-dir", default="runs/quickstart", help="must match configs/quickstart.yaml")
    parser.add_argument("--retrain", action="store_true", help="train again even if a checkpoint exists")
    args = parser.parse_args()
    started = time.time()
    data, run_dir = Path(args.data), Path(args.run_dir)
    checkpoint = run_dir / "checkpoints" / "best.ckpt"

    if not (REPO / data / "train.json").is_file():
        run(["tools/make_synthetic.py", "--output", str(data), "--train", "1000", "--val", "200", "--seed", "0"])
    else:
        print(f"demo: using the synthetic set in {data}/")

    if args.retrain or not (REPO / checkpoint).is_file():
        run(["tools/train.py", "fit", "--config", "configs/quickstart.yaml",
             f"--trainer.default_root_dir={run_dir}",
             f"--data.train_images={data}/train", f"--data.train_annotations={data}/train.json",
             f"--data.val_images={data}/val", f"--data.val_annotations={data}/val.json"])
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

    videos = [run_dir / "demo_synthetic.mp4"]
    # The synthetic val images played as a slide show at 2 frames per second.
    run(["tools/demo_video.py", "--checkpoint", str(checkpoint), "--input", f"{data}/val",
         "--output", str(videos[0]), "--fps", "2", "--max-frames", "40"])
    if SHARED_DASHCAM.is_file():
        videos.append(run_dir / "demo_dashcam.mp4")
        run(["tools/demo_video.py", "--checkpoint", str(checkpoint), "--input", str(SHARED_DASHCAM),
             "--output", str(videos[1]), "--track"])

    minutes = (time.time() - started) / 60
    print(f"\n=== demo finished in {minutes:.1f} min ===")
    print(f"checkpoint   {checkpoint} (and last.ckpt beside it; logs in {run_dir}/csv, {run_dir}/tensorboard)")
    print(f"metrics      {eval_dir / 'metrics.json'}: mAP@[.5:.95] {metrics['AP']:.3f}, mAP@.5 {metrics['AP50']:.3f}")
    print(f"plots        {eval_dir / 'plots'}/ (precision-recall curves, best and worst images)")
    print(f"pictures     {predictions}/ (detections drawn, detections.json)")
    for video in videos:
        print(f"video        {video} (summary in {video.with_suffix('.json')})")
    if not SHARED_DASHCAM.is_file():
        print("video        dashcam clip skipped: ../shared/data/udacity-vehicle-detection is absent")


if __name__ == "__main__":
    main()
