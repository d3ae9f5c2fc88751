"""Prove the TFLite MobileNetV2 conversion (``detector/zoo/tflite_mobilenet_v2.py``) against TFLite itself.

TFLite is no dependency of this project: ``make litert-env`` makes ``.venv-litert`` (``ai-edge-litert``),
where ``tools/tflite_reference.py`` runs the ``.tflite`` file with TFLite's own interpreter. This script
fetches the zoo classifiers (the pinned google-coral/test_data URLs, checksum checked), pre-processes
each photo once (shorter side to 256, centre crop 224: the classifier's own eval pipeline) into the
uint8 crop both sides take, and compares

- ``float``: our converted network (dequantised weights, float activations) against TFLite's integer
  outputs: top-1, top-5, and probabilities in TFLite's output steps (1/256);
- ``simulated``: the same network with every activation rounded to the file's own scale and zero
  point (``torch.fake_quantize_per_tensor_affine`` after each op TFLite quantises): what is left of
  the gap once the integer arithmetic's activation rounding is modelled.

    python tools/tflite_equivalence.py                          # a table per model
    python tools/tflite_equivalence.py --record tests/zoo/tflite_mobilenet_v2_reference.json
    python tools/tflite_equivalence.py --zoo mobilenet_v2_1.0_224_imagenet_quant --export m.int8.pte  # + an export

``--export`` adds a column for a classifier export of that model (``tools/export.py``'s ``.onnx`` or
``.pte``, e.g. its int8 ExecuTorch program), run through :class:`detector.pretrain.predict.ExportedClassifier`
on the same crops.

Photos: the ten of ``../shared/data/coral-mobilenetv2/images`` and six others of ``../shared/data``
(raccoon, Udacity dashcam stills). Only their names, checksums and TFLite's top-5 go into the record.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detector.data.io import load_image
from detector.pretrain.model import MobileNetV2Classifier
from detector.pretrain.transforms import CROP_FRACTION
from detector.zoo import fetch, zoo_classifiers
from detector.zoo.tflite_mobilenet_v2 import CONFIG, TFLiteOperator, conv_targets, read_operators, read_state_dict

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LITERT_PYTHON = ROOT / ".venv-litert" / "bin" / "python"
OTHER_PHOTOS = ("raccoon/images/raccoon-1.jpg", "raccoon/images/raccoon-19.jpg", "raccoon/images/raccoon-104.jpg",
                "udacity-vehicle-detection/test_images/test1.jpg", "udacity-vehicle-detection/test_images/test4.jpg",
                "udacity-vehicle-detection/test_images/test6.jpg")
OUTPUT_STEP = 1 / 256  # both files' softmax output scale


def default_photos() -> list[Path]:
    coral = sorted((SHARED / "coral-mobilenetv2" / "images").iterdir())
    return coral + [SHARED / name for name in OTHER_PHOTOS if (SHARED / name).is_file()]


def crop(path: Path, size: int = 224) -> np.ndarray:
    """The classifier's eval view of ``path``: shorter side to ``size / 0.875``, centre crop, uint8 RGB."""
    import albumentations as A
    import cv2

    steps = A.Compose([A.SmallestMaxSize(max_size=int(round(size / CROP_FRACTION)), interpolation=cv2.INTER_LINEAR),
                       A.CenterCrop(height=size, width=size)])
    return steps(image=load_image(path))["image"]


def tflite_outputs(model_file: Path, crops: list[np.ndarray]) -> tuple[np.ndarray, float, int]:
    """TFLite's integer outputs ``[N, 1001]``, and their scale and zero point."""
    if not LITERT_PYTHON.is_file():
        raise SystemExit(f"{LITERT_PYTHON} is missing: run `make litert-env` first")
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", **{f"image_{i}": c for i, c in enumerate(crops)})
        subprocess.run([str(LITERT_PYTHON), str(ROOT / "tools" / "tflite_reference.py"), "--model", str(model_file),
                        "--images", str(Path(tmp) / "in.npz"), "--output", str(Path(tmp) / "out.npz")], check=True)
        out = np.load(Path(tmp) / "out.npz")
        raw = np.stack([out[f"output_{i}"] for i in range(len(crops))])
        return raw, float(out["output_scale"]), int(out["output_zero_point"])


def _quantizer(tensor: Any) -> tuple[float, int, int, int]:
    info = np.iinfo(tensor.dtype)
    return float(tensor.scale[0]), int(tensor.zero_point[0]), int(info.min), int(info.max)


@contextmanager
def integer_activations(model: MobileNetV2Classifier, operators: list[TFLiteOperator]) -> Iterator[None]:
    """Round every activation TFLite stores to the file's own scale and zero point, while inside."""
    modules = dict(model.trunk.features.named_modules())
    # The module whose output TFLite stores: the ReLU6 after a conv's BatchNorm, else the BatchNorm.
    places: list[nn.Module] = []
    for name, _, norm_name, relu6 in conv_targets(model.trunk.features):
        parent, index = name.rsplit(".", 1)
        places.append(modules[f"{parent}.{int(index) + 2}"] if relu6 else modules[norm_name])
    convs = [op for op in operators if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    pairs = list(zip(places, convs[:-1]))
    residual_blocks = [block for block in model.trunk.features if getattr(block, "use_res_connect", False)]
    pairs += list(zip(residual_blocks, [op for op in operators if op.kind == "ADD"]))
    pools = [op for op in operators if op.kind in ("AVERAGE_POOL_2D", "MEAN")]
    pairs += [(model.pool, pools[0]), (model.classifier[1], convs[-1])]

    def hook(scale: float, zero_point: int, low: int, high: int):
        def apply(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
            return torch.fake_quantize_per_tensor_affine(output, scale, zero_point, low, high)
        return apply

    handles = [module.register_forward_hook(hook(*_quantizer(op.outputs[0]))) for module, op in pairs]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def compare(name: str, photos: Sequence[Path], crops: list[np.ndarray], export: Path | None = None) -> dict[str, Any]:
    entry = zoo_classifiers()[name]
    path = fetch(entry, progress=False)
    raw, scale, zero_point = tflite_outputs(path, crops)
    reference = (raw.astype(np.float64) - zero_point) * scale
    state, pre = read_state_dict(path)
    model = MobileNetV2Classifier(**CONFIG)
    model.load_state_dict(state)
    model.eval()
    mean = torch.tensor(pre["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"]).view(1, 3, 1, 1)
    images = (torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255 - mean) / std
    operators, _ = read_operators(path.read_bytes())
    with torch.no_grad():
        ours = model(images).softmax(1).double().numpy()
        with integer_activations(model, operators):
            simulated = model(images).softmax(1).double().numpy()
        exported = None
        if export is not None:
            from detector.pretrain.predict import ExportedClassifier

            exported = ExportedClassifier(export)(images).softmax(1).double().numpy()
    rows = []
    for i, photo in enumerate(photos):
        top5 = np.argsort(-reference[i], kind="stable")[:5]
        row = {"photo": str(photo.relative_to(SHARED)) if photo.is_relative_to(SHARED) else photo.name,
               "file_sha256": hashlib.sha256(photo.read_bytes()).hexdigest(),
               "tflite_top5": [[int(c), float(round(reference[i][c], 6))] for c in top5]}
        versions = [("float", ours[i]), ("simulated", simulated[i])]
        if exported is not None:
            versions.append(("export", exported[i]))
        for label, probs in versions:
            row[label] = {
                "top1": int(np.argmax(probs)),
                "top1_agrees": bool(np.argmax(probs) == np.argmax(reference[i])),
                "top5_of_tflite_max_steps": float(np.abs(probs[top5] - reference[i][top5]).max() / OUTPUT_STEP),
                "max_steps": float(np.abs(probs - reference[i]).max() / OUTPUT_STEP),
            }
        rows.append(row)
    return {"url": entry.url, "sha256": entry.sha256_prefix, "output_scale": scale, "output_zero_point": zero_point,
            "mean": pre["mean"], "std": pre["std"], "photos": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", nargs="*", default=sorted(zoo_classifiers()), help="zoo classifiers to compare")
    parser.add_argument("--record", type=Path, help="write the comparison (TFLite's top-5 per photo) as JSON here")
    parser.add_argument("--export", type=Path, help="also compare this classifier export (.onnx / .pte) of the model")
    args = parser.parse_args(argv)
    from detector.zoo.registry import imagenet_class_names

    names = imagenet_class_names()
    photos = default_photos()
    crops = [crop(p) for p in photos]
    record = {}
    for name in args.zoo:
        result = compare(name, photos, crops, args.export)
        record[name] = result
        print(f"\n{name} (steps of 1/256 in probability)")
        extra = " top-5 gap, export |" if args.export else ""
        print("| photo | TFLite top-1 | ours (float) | top-5 gap, float | top-5 gap, simulated |" + extra)
        print("|---|---|---|---:|---:|" + ("---:|" if args.export else ""))
        for row in result["photos"]:
            (top, p), = row["tflite_top5"][:1]
            ours = row["float"]
            print(f"| {row['photo']} | {names[top]} {p:.3f} | {names[ours['top1']]} | "
                  f"{ours['top5_of_tflite_max_steps']:.1f} | {row['simulated']['top5_of_tflite_max_steps']:.1f} |"
                  + (f" {row['export']['top5_of_tflite_max_steps']:.1f} ({'same' if row['export']['top1_agrees'] else 'other'} top-1) |"
                     if args.export else ""))
        agree = sum(r["float"]["top1_agrees"] for r in result["photos"])
        gaps = [r["float"]["top5_of_tflite_max_steps"] for r in result["photos"]]
        simulated = [r["simulated"]["top5_of_tflite_max_steps"] for r in result["photos"]]
        print(f"top-1 agrees on {agree}/{len(photos)}; top-5 gap in steps: float median {np.median(gaps):.1f}, "
              f"max {max(gaps):.1f}; simulated median {np.median(simulated):.1f}, max {max(simulated):.1f}")
        if args.export:
            steps = [r["export"]["top5_of_tflite_max_steps"] for r in result["photos"]]
            agree = sum(r["export"]["top1_agrees"] for r in result["photos"])
            print(f"{args.export}: top-1 agrees on {agree}/{len(photos)}; top-5 gap in steps: median "
                  f"{np.median(steps):.1f}, max {max(steps):.1f}")
    if args.record:
        args.record.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
