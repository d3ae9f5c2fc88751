"""CPU latency of the phone-photo classifier (TF's ImageNet MobileNetV2 from the zoo) per backend.

    python benchmarks/classifier_latency.py --threads 2 --repeats 50 [--json cls.json]

One process, round-robin (:func:`detector.evaluation.speed.round_robin`), on the crops of the ten
photos of ``../shared/data/coral-mobilenetv2/images`` (or ``--images DIR``):

- **network**: a normalised ``[1, 3, 224, 224]`` image in, logits out: torchvision's ``mobilenet_v2``
  (the reference: same architecture, random weights), ours in PyTorch eager (the converted
  ``zoo:NAME``), its ONNX exports on ONNX Runtime (fp32, and int8 QDQ calibrated on the same photos),
  its ExecuTorch programs (XNNPACK, fp32 and int8 calibrated on the same photos);
- **whole**: a decoded ``HxWx3`` photo in, top-5 names out (:class:`ClassifierPredictor.predict`:
  resize, crop, normalise, network, softmax), per backend.

The exports are written into a temporary folder (about a minute) unless ``--onnx`` / ``--pte`` /
``--pte-int8`` name existing ones. Where ``.venv-litert`` exists (``make litert-env``), TFLite's own
interpreter runs the original integer file in a subprocess (``tools/tflite_reference.py --time``):
its network time is a separate measurement, not round-robin. Medians (ms) and ratios to torchvision.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as benchmarks/latency.py: no spinning OpenMP threads

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from detector.data.io import load_image  # noqa: E402
from detector.evaluation.speed import cpu_name, round_robin  # noqa: E402
from detector.pretrain import (  # noqa: E402
    export_classifier_executorch,
    export_classifier_onnx,
    quantize_classifier_onnx,
)
from detector.pretrain.predict import ClassifierPredictor  # noqa: E402
from detector.zoo import fetch, zoo_classifiers  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "coral-mobilenetv2" / "images"
LITERT_PYTHON = ROOT / ".venv-litert" / "bin" / "python"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", default="mobilenet_v2_1.0_224_imagenet_quant")
    parser.add_argument("--images", type=Path, default=PHOTOS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--onnx", type=Path)
    parser.add_argument("--pte", type=Path)
    parser.add_argument("--pte-int8", type=Path)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from torchvision.models import mobilenet_v2
    from tflite_equivalence import crop

    checkpoint = f"zoo:{args.zoo}"
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    arrays = [load_image(p) for p in photos]
    with tempfile.TemporaryDirectory(prefix="cls-bench-") as tmp:
        onnx_path = args.onnx or export_classifier_onnx(checkpoint, Path(tmp) / "classifier.onnx")
        onnx_int8 = quantize_classifier_onnx(onnx_path, Path(tmp) / "classifier.int8.onnx", photos)
        pte = args.pte or export_classifier_executorch(checkpoint, Path(tmp) / "classifier.pte").path
        pte_int8 = args.pte_int8 or export_classifier_executorch(
            checkpoint, Path(tmp) / "classifier.int8.pte", int8=True, calibration_images=photos).path
        predictors = {
            "torch eager": ClassifierPredictor.from_checkpoint(checkpoint),
            "ONNX Runtime fp32": ClassifierPredictor.from_checkpoint(onnx_path),
            "ONNX Runtime int8": ClassifierPredictor.from_checkpoint(onnx_int8),
            "ExecuTorch fp32": ClassifierPredictor.from_checkpoint(pte),
            "ExecuTorch int8": ClassifierPredictor.from_checkpoint(pte_int8),
        }
        from detector.pretrain.predict import ExportedClassifier

        for name, path in (("ONNX Runtime fp32", onnx_path), ("ONNX Runtime int8", onnx_int8)):
            predictors[name].model = ExportedClassifier(path, num_threads=args.threads)  # torch's thread count
        reference = mobilenet_v2(weights=None).eval()
        batches = [predictors["torch eager"].preprocess([a]) for a in arrays]
        n = len(arrays)
        tasks = {"network: torchvision mobilenet_v2 eager": lambda i: reference(batches[i % n])}
        for name, predictor in predictors.items():
            tasks[f"network: {name}"] = lambda i, p=predictor: p.model(batches[i % n])
        for name, predictor in predictors.items():
            tasks[f"whole: {name}"] = lambda i, p=predictor: p.predict([arrays[i % n]])
        with torch.inference_mode():
            stats = round_robin(tasks, args.repeats, args.warmup)
        tflite = None
        if LITERT_PYTHON.is_file():
            np.savez(Path(tmp) / "in.npz", image_0=crop(photos[0]))
            run = subprocess.run([str(LITERT_PYTHON), str(ROOT / "tools" / "tflite_reference.py"), "--model",
                                  str(fetch(zoo_classifiers()[args.zoo], progress=False)), "--images",
                                  str(Path(tmp) / "in.npz"), "--output", str(Path(tmp) / "out.npz"), "--threads",
                                  str(args.threads), "--time", str(args.repeats)], capture_output=True, text=True,
                                 check=True)
            tflite = json.loads(run.stdout.strip().splitlines()[-1])["median_ms"]
    base = stats["network: torchvision mobilenet_v2 eager"]["median"]
    print(f"{cpu_name()}, {args.threads} threads, {args.repeats} rounds; medians, ratio to torchvision's eager network")
    print("| what | median ms | ratio |")
    print("|---|---:|---:|")
    for name, stat in stats.items():
        print(f"| {name} | {stat['median']:.2f} | {stat['median'] / base:.3f} |")
    if tflite is not None:
        print(f"| network: TFLite int8 (the original file; own process) | {tflite:.2f} | {tflite / base:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": args.threads, "stats": stats,
                                         "tflite_network_ms": tflite}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
