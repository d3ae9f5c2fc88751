#!/usr/bin/env python
"""Record KITTI's own 2D evaluation (the devkit's C++) on seeded detections, to prove ours against it.

The devkit's ``evaluate_object.cpp`` is not vendored: build a copy of it in a side folder, e.g. the
public offline port github.com/prclibo/kitti_eval (``evaluate_object_3d_offline.cpp``, the devkit's 2D
rules with the 2017 minimum-height fix; needs Boost's headers: ``apt-get install libboost-dev``):

    g++ -O2 -o /tmp/kitti_eval/evaluate_object_3d_offline evaluate_object_3d_offline.cpp
    python tools/kitti_devkit_reference.py --devkit /tmp/kitti_eval/evaluate_object_3d_offline \\
        --labels ../shared/data/kitti-dev/label_2 --record tests/evaluation/kitti_devkit_reference.json

For each seed it writes KITTI result files of :func:`seeded_detections` (jittered label boxes, misses,
false positives, Van/Truck called Car, Cyclist called Pedestrian), runs the devkit on them and records
its 41-point precision curves (``plot/<class>_detection.txt``). Only those numbers are recorded: the
detections are made again from the labels by the test (``tests/evaluation/test_kitti.py``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SEEDS = (0, 1, 2)
CLASSES = ("Car", "Pedestrian", "Cyclist")


def seeded_detections(labels_dir: Path, seed: int) -> dict[str, list[tuple[str, float, float, float, float, float]]]:
    """``{stem: [(type, x1, y1, x2, y2, score), ...]}`` rounded as the result files store them (boxes to
    0.01 px, scores to 1e-4), so the devkit and this project read the same numbers."""
    rng = np.random.default_rng(seed)
    frames = {}
    for path in sorted(Path(labels_dir).glob("*.txt")):
        rows = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if not parts or parts[0] == "DontCare":
                continue
            x1, y1, x2, y2 = (float(v) for v in parts[4:8])
            if rng.random() < 0.15:
                continue  # missed
            jitter = rng.normal(0, 0.08, 4) * np.array([x2 - x1, y2 - y1, x2 - x1, y2 - y1])
            kind = parts[0]
            if kind in ("Van", "Truck") and rng.random() < 0.5:
                kind = "Car"
            if kind == "Person_sitting" or (kind == "Cyclist" and rng.random() < 0.3):
                kind = "Pedestrian"
            rows.append((kind, x1 + jitter[0], y1 + jitter[1], x2 + jitter[2], y2 + jitter[3], float(rng.random())))
        for _ in range(int(rng.integers(0, 6))):  # false positives, some in DontCare regions
            x1, y1 = rng.uniform(0, 1100), rng.uniform(100, 300)
            w, h = rng.uniform(10, 150), rng.uniform(10, 120)
            rows.append((str(rng.choice(list(CLASSES))), x1, y1, x1 + w, y1 + h, float(rng.random())))
        frames[path.stem] = [(k, round(a, 2), round(b, 2), round(c, 2), round(d, 2), round(s, 4))
                             for k, a, b, c, d, s in rows]
    return frames


def write_results(frames: dict, folder: Path) -> None:
    """KITTI result files: 3D fields -1000 and alpha -10, so the devkit evaluates the 2D boxes only."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for stem, rows in frames.items():
        lines = [f"{k} -1 -1 -10 {a:.2f} {b:.2f} {c:.2f} {d:.2f} -1 -1 -1 -1000 -1000 -1000 -10 {s:.4f}"
                 for k, a, b, c, d, s in rows]
        (folder / "data" / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devkit", type=Path, required=True, help="the compiled evaluate_object(_3d_offline)")
    parser.add_argument("--labels", type=Path, required=True, help="KITTI label_2 folder")
    parser.add_argument("--record", type=Path, required=True, help="JSON to write")
    args = parser.parse_args()
    record = {"devkit": "github.com/prclibo/kitti_eval evaluate_object_3d_offline.cpp (commit 955c04c)",
              "labels": str(args.labels), "seeds": {}}
    for seed in SEEDS:
        with tempfile.TemporaryDirectory() as tmp:
            write_results(seeded_detections(args.labels, seed), Path(tmp))
            subprocess.run([str(args.devkit), str(args.labels), tmp], check=True, capture_output=True)
            curves = {}
            for cls in CLASSES:
                table = np.loadtxt(Path(tmp) / "plot" / f"{cls.lower()}_detection.txt")  # recall, easy, moderate, hard
                curves[cls] = {d: table[:, k + 1].round(6).tolist() for k, d in enumerate(("easy", "moderate", "hard"))}
            record["seeds"][str(seed)] = curves
    args.record.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.record}: the devkit's 41-point curves for seeds {list(SEEDS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
