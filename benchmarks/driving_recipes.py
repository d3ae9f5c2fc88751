"""The driving table of issue #38: each model's CARLA test AP, kitti-dev AP50 per class (whole frame and
sliced) and ms per KITTI frame, in one run.

    python benchmarks/driving_recipes.py CKPT [CKPT ...] [--carla data/carla] [--kitti ../shared/data/kitti-dev]
        [--json table.json]

CKPT is any model file or zoo name. kitti-dev (real KITTI frames, CC BY-NC-SA: measuring only) is
converted in a temporary folder, never written into the project: Car, Van and Truck as ``vehicle``,
Pedestrian as ``person``, Cyclist as ``bike`` (CARLA's bicycle class), every other type and DontCare
ignore regions, as ``tools/convert_dataset.py --from kitti --class-map`` does. Each model is scored
through the Predictor (as ``tools/eval.py``): ``whole`` (``--no-slice``), ``sliced`` (``--slice``:
SAHI's tiles plus the whole frame) and ``default`` (the view the model records, if it records one).
ms per frame: the median of ``Predictor.predict`` over the 50 frames, after one warm-up, per view.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.data.converters import kitti_to_coco, parse_class_map, write_coco  # noqa: E402
from detector.data.io import load_image  # noqa: E402
from detector.evaluation.evaluate import evaluate_predictor_on_dataset  # noqa: E402
from detector.inference import Predictor  # noqa: E402
from detector.slicing import FrameView, Slicing  # noqa: E402

KITTI_CLASSES = ["Car,Van,Truck=vehicle", "Pedestrian=person", "Cyclist=bike"]


def per_class_ap50(run: Any) -> dict[str, float]:
    return {name: round(float(row["AP50"]), 4) for name, row in run.metrics["per_class"].items()}


def score_views(path: str, images: Path, annotations: Path) -> dict[str, Any]:
    """kitti-dev AP50 per class and ms per frame, for each view of the model."""
    recorded = Predictor.from_checkpoint(path).view
    views: dict[str, dict[str, Any]] = {"whole": {"slicing": None, "letterbox": False},
                                        "sliced": {"slicing": Slicing(), "letterbox": False}}
    if recorded != FrameView():
        views["default"] = {}
    out: dict[str, Any] = {}
    frames = [load_image(p) for p in sorted(images.glob("*.png"))]
    for name, options in views.items():
        predictor = Predictor.from_checkpoint(path, **options)
        run, _ = evaluate_predictor_on_dataset(predictor, images, annotations, progress=False)
        predictor.predict(frames[0])
        times = []
        for frame in frames:
            start = time.perf_counter()
            predictor.predict(frame)
            times.append(1000 * (time.perf_counter() - start))
        out[name] = {"AP": round(float(run.metrics["AP"]), 4), "AP50": per_class_ap50(run),
                     "ms": round(statistics.median(times), 1), "view": predictor.view.describe()}
    return out


def carla_ap(path: str, carla: Path) -> dict[str, Any] | None:
    test = carla / "test.json"
    if not test.exists():
        return None
    predictor = Predictor.from_checkpoint(path)
    run, _ = evaluate_predictor_on_dataset(predictor, carla / "images", test, progress=False)
    return {"AP": round(float(run.metrics["AP"]), 4), "AP50": round(float(run.metrics["AP50"]), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--carla", type=Path, default=ROOT / "data" / "carla")
    parser.add_argument("--kitti", type=Path, default=ROOT.parent / "shared" / "data" / "kitti-dev")
    parser.add_argument("--json", type=Path, help="write the table here too")
    args = parser.parse_args(argv)
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        annotations = Path(tmp) / "kitti_vpc.json"
        coco, _ = kitti_to_coco(args.kitti / "image_2", args.kitti / "label_2", parse_class_map(KITTI_CLASSES))
        write_coco(coco, annotations)
        for path in args.checkpoints:
            row = {"carla_test": carla_ap(path, args.carla), "kitti_dev": score_views(path, args.kitti / "image_2", annotations)}
            table[path] = row
            print(json.dumps({path: row}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
