"""ExecuTorch (XNNPACK) against PyTorch on one trained detector: COCO mAP and single-image latency.

    python benchmarks/executorch_programs.py --checkpoint zoo:carla_ssdlite_mobilenetv2 --images data/carla/images \\
        --annotations data/carla/test.json --calibration-images data/carla/images/train --json executorch.json

1. Exports the checkpoint to ``fp32.pte`` and ``int8.pte`` (+ sidecars) in ``--output-dir`` (a temporary
   folder by default): :func:`detector.deploy.executorch_export.export_executorch`, int8 calibrated on
   ``--calibration-count`` images of ``--calibration-images`` (use training images, not the test set).
2. mAP with pycocotools on ``--annotations``, for the PyTorch model (the checkpoint's exact numbers:
   ``TorchRunner`` without fusion, as ``tools/eval.py`` scores it) and both programs through
   :class:`detector.deploy.executorch_runtime.ExecuTorchRunner`: the same pre- and post-processing,
   only the network differs.
3. Latency of the network alone on one normalised ``[1, 3, H, W]`` image (a test image): the programs'
   ``Method.execute`` against ``SSDLite.forward`` of the conv-BN-fused model in channels-last (the
   ``TorchRunner`` default on the CPU) under ``torch.inference_mode``, ``--threads`` intra-op threads.
   ExecuTorch's XNNPACK thread pool has one thread per core (the Python runtime offers no public
   setting), so run this on a ``--threads``-core machine. ``--warmup`` untimed rounds, then
   ``--repeats`` rounds that run each model once, round-robin (a load spike hits all alike); median,
   p90 and min in ms.

Prints a table; ``--json`` writes every figure with the settings.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/latency.py: spinning threads on a shared box

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from detector.checkpoint import load_checkpoint  # noqa: E402
from detector.data.io import list_images  # noqa: E402
from detector.deploy.executorch_export import export_executorch  # noqa: E402
from detector.deploy.executorch_runtime import ExecuTorchRunner, load_executorch_runner  # noqa: E402
from detector.deploy.preprocess import ImagePreprocessor, to_rgb_array  # noqa: E402
from detector.evaluation import speed  # noqa: E402
from detector.evaluation.evaluate import evaluate_on_dataset  # noqa: E402
from detector.files import atomic_write_text  # noqa: E402
from detector.inference import TorchRunner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CARLA = ROOT / "data" / "carla"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="zoo:carla_ssdlite_mobilenetv2", help="detector checkpoint or zoo:NAME (default: %(default)s)")
    parser.add_argument("--images", type=Path, default=CARLA / "images", help="folder the annotations' file names are relative to")
    parser.add_argument("--annotations", type=Path, default=CARLA / "test.json", help="COCO ground truth to score on")
    parser.add_argument("--calibration-images", type=Path, default=CARLA / "images" / "train", help="int8 calibration folder")
    parser.add_argument("--calibration-count", type=int, default=100, help="calibration images (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, help="keep the .pte programs here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="evaluation batch (default: %(default)s)")
    parser.add_argument("--skip-map", action="store_true", help="latency only")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if not args.skip_map and not args.annotations.is_file():
        parser.error(f"--annotations {args.annotations} not found (prepare it: python tools/fetch_dataset.py carla "
                     "--output data/carla) or pass --skip-map")
    return args


def export_programs(args: argparse.Namespace, model: Any, label_map: Any, folder: Path) -> dict[str, Any]:
    """fp32 and int8 programs in ``folder``; what each export reported."""
    exports = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        start = time.perf_counter()
        result = export_executorch(model, label_map, folder / f"{name}.pte", int8=int8,
                                   calibration_images=args.calibration_images if int8 else None,
                                   calibration_count=args.calibration_count)
        exports[name] = {
            "path": str(result.path), "size_mb": result.size_bytes / 1e6, "export_s": time.perf_counter() - start,
            "delegated_ops": result.delegated_ops, "undelegated_ops": result.undelegated_ops,
            "calibration_images": result.calibration_images, "max_abs_diff_vs_pytorch": result.max_abs_diff,
        }
        print(f"exported {name}: {exports[name]['size_mb']:.2f} MB in {exports[name]['export_s']:.0f} s, "
              f"max |diff| vs PyTorch {result.max_abs_diff:.2e} -> {result.path}", flush=True)
    return exports


def latency(args: argparse.Namespace, torch_runner: TorchRunner, programs: dict[str, ExecuTorchRunner]) -> dict[str, Any]:
    """Median / p90 / min ms of the network alone on one test image."""
    files = list_images(args.images)
    if not files:
        raise SystemExit(f"--images {args.images}: no image found")
    first = next(iter(programs.values()))
    x = ImagePreprocessor(first.image_size, first.mean, first.std)([to_rgb_array(files[0])])
    x_torch = x.contiguous(memory_format=torch_runner.memory_format)

    def run_torch(_: int) -> None:
        with torch.inference_mode():
            torch_runner.model(x_torch)

    tasks = {"pytorch": run_torch}
    for name, runner in programs.items():
        tasks[f"executorch_{name}"] = lambda _, method=runner.method: method.execute([x])
    return speed.round_robin(tasks, rounds=args.repeats, warmup=args.warmup)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model, label_map = load_checkpoint(args.checkpoint, map_location="cpu")
    with tempfile.TemporaryDirectory(prefix="executorch-bench-") as tmp:
        folder = args.output_dir or Path(tmp)
        exports = export_programs(args, model, label_map, folder)
        programs = {name: load_executorch_runner(info["path"]) for name, info in exports.items()}
        maps: dict[str, Any] = {}
        if not args.skip_map:
            runners = {"pytorch": TorchRunner(load_checkpoint(args.checkpoint)[0], fuse=False, channels_last=False),
                       **{f"executorch_{k}": v for k, v in programs.items()}}
            for name, runner in runners.items():
                start = time.perf_counter()
                run, _ = evaluate_on_dataset(runner, label_map, args.images, args.annotations,
                                             batch_size=args.batch_size, num_workers=0, progress=False)
                maps[name] = {k: run.metrics[k] for k in ("AP", "AP50", "AP75")}
                print(f"mAP {name}: {maps[name]['AP']:.4f} (AP50 {maps[name]['AP50']:.4f}, "
                      f"{time.perf_counter() - start:.0f} s)", flush=True)
        times = latency(args, TorchRunner(model), programs)

    print(f"\n{'model':<18} {'mAP':>7} {'AP50':>7} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'size MB':>8}")
    for name in ("pytorch", "executorch_fp32", "executorch_int8"):
        ap = maps.get(name, {})
        size = exports[name.removeprefix("executorch_")]["size_mb"] if name != "pytorch" else None
        print(f"{name:<18} {ap.get('AP', float('nan')):>7.4f} {ap.get('AP50', float('nan')):>7.4f} "
              f"{times[name]['median']:>10.2f} {times[name]['p90']:>8.2f} {times[name]['min']:>8.2f} "
              f"{'' if size is None else f'{size:.2f}':>8}")
    h, w = programs["fp32"].image_size
    report = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "checkpoint": str(args.checkpoint),
        "input": [1, 3, h, w],
        "cpu": speed.cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "exports": exports,
        "map": maps,
        "latency_ms": times,
    }
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
