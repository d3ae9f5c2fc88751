"""Export a checkpoint to ONNX or ExecuTorch (optionally int8) for deployment; the output's suffix decides.

    python tools/export.py --checkpoint CKPT --output model.onnx [--image-size N] [--opset N]
        [--dynamic-batch] [--with-nms] [--int8 --calibration-images DIR [--calibration-count N]]
    python tools/export.py --checkpoint CKPT --output model.pte [--image-size N]
        [--int8 --calibration-images DIR [--calibration-count N]]

- The file carries the label map, input size and normalisation as metadata: ``tools/predict.py
  --backend onnx``, ``tools/demo_video.py --backend onnx`` and ``tools/eval.py --checkpoint
  model.onnx`` run from it alone.
- Without ``--with-nms`` the graph returns ``cls_logits`` and ``bbox_regression`` and the
  project's post-processing runs on them; with it, the graph returns final ``boxes``, ``scores``,
  ``labels`` and ``num_detections`` (fixed size ``max_detections``, zero-padded).
- ``--int8`` also writes ``<output stem>.int8.onnx``: static post-training quantization (QDQ,
  per-channel int8 weights) calibrated on ``--calibration-count`` images of ``--calibration-images``.
  The fp32 file is kept beside it, so ``tools/eval.py`` can measure what quantization costs.
- ``--output model.pte`` writes an ExecuTorch program for the XNNPACK backend (raw outputs, batch 1)
  and its metadata sidecar ``model.pte.json``; with ``--int8``, also ``model.int8.pte`` (+ sidecar):
  PT2E quantization with the XNNPACK quantizer, per-channel int8 weights, calibrated the same way
  (:mod:`detector.deploy.executorch_export`; apps: ``docs/executorch.md``). ``--dynamic-batch`` makes
  programs that take 1 to 8 images a call (ExecuTorch needs an upper bound): a sliced frame's views run
  in one call. ``--with-nms`` and ``--opset`` are ONNX options and are refused.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from detector.deploy.onnx_export import DEFAULT_OPSET, MIN_OPSET

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (save_checkpoint's or Lightning's .ckpt)")
    parser.add_argument("--output", type=Path, required=True, help="the .onnx file (or ExecuTorch .pte program) to write")
    parser.add_argument("--image-size", type=int, help="export at this square input size (default: the checkpoint's)")
    parser.add_argument("--opset", type=int, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch 1)")
    parser.add_argument("--with-nms", action="store_true", help="decoding and NMS in the graph: final boxes, scores, labels")
    parser.add_argument("--int8", action="store_true", help="also write an int8 (QDQ) model, <output stem>.int8.onnx")
    parser.add_argument("--calibration-images", type=Path, help="folder of images to calibrate --int8 on")
    parser.add_argument("--calibration-count", type=int, default=100, help="calibration images to use (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.opset is not None and args.opset < MIN_OPSET:
        parser.error(f"--opset must be at least {MIN_OPSET}")
    if args.image_size is not None and args.image_size < 32:
        parser.error("--image-size must be at least 32")
    if args.int8 and args.calibration_images is None:
        parser.error("--int8 needs --calibration-images DIR")
    if not args.int8 and args.calibration_images is not None:
        parser.error("--calibration-images applies to --int8 only")
    if args.calibration_count < 1:
        parser.error("--calibration-count must be at least 1")
    if args.output.suffix.lower() not in (".onnx", PTE):
        parser.error("--output must end in .onnx (ONNX) or .pte (ExecuTorch)")
    if is_pte(args.output):
        onnx_only = [flag for flag, given in (("--with-nms", args.with_nms), ("--opset", args.opset is not None))
                     if given]
        if onnx_only:
            parser.error(f"{', '.join(onnx_only)}: ONNX options; an ExecuTorch program (.pte) has raw outputs "
                         "(decoding and NMS run in the app)")
    elif args.opset is None:
        args.opset = DEFAULT_OPSET
    return args


PTE = ".pte"


# The largest batch of a --dynamic-batch ExecuTorch program: a frame and its tiles (SAHI's rule gives
# four views of a 3:1 dashcam frame), with room to spare.
PTE_MAX_BATCH = 8


def is_pte(output: Path) -> bool:
    """An ExecuTorch program is asked for (``--output *.pte``)."""
    return output.suffix.lower() == PTE


def int8_path(output: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``; ``model.pte`` -> ``model.int8.pte``."""
    return output.with_name(output.stem + (".int8.pte" if is_pte(output) else ".int8.onnx"))


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def export_classifier(args: argparse.Namespace) -> int:
    """tools/train_classifier.py's checkpoints: logits out, class names in the metadata."""
    from detector.pretrain import export_classifier_onnx, quantize_classifier_onnx

    if args.with_nms:
        print("error: --with-nms applies to detector checkpoints, not classifiers", file=sys.stderr)
        return 2
    files = _calibration_images(args) if args.int8 else None  # a bad folder fails before the export
    path = export_classifier_onnx(args.checkpoint, args.output, image_size=args.image_size, opset=args.opset,
                                  dynamic_batch=args.dynamic_batch)
    print(f"exported classifier {args.checkpoint} (logits out, class names in the metadata) -> {path}")
    if files is not None:
        int8 = quantize_classifier_onnx(path, int8_path(args.output), files, calibration_count=None)
        print(f"quantized it to int8 QDQ, calibrated on {len(files)} images ({_mb(int8.stat().st_size)}) -> {int8}")
    return 0


def export_detector(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The fp32 export (and the int8 one with ``--int8``); returns the fp32 result and what was written."""
    from detector.deploy.onnx_export import export_checkpoint

    start = time.perf_counter()
    result = export_checkpoint(
        args.checkpoint, args.output, image_size=args.image_size, opset=args.opset,
        dynamic_batch=args.dynamic_batch, with_nms=args.with_nms,
    )
    check = "" if result.max_abs_diff is None else f"; ONNX Runtime vs PyTorch max |diff| {result.max_abs_diff:.2e}"
    written = [(f"fp32 ({_mb(result.size_bytes)}, opset {result.opset}, outputs: {', '.join(result.info.outputs)}"
                f"{check}, {time.perf_counter() - start:.1f} s) -> {result.path}")]
    if args.int8:
        from detector.deploy.quantize import find_calibration_images, quantize_onnx

        files = find_calibration_images(args.calibration_images, args.calibration_count)
        start = time.perf_counter()
        quant = quantize_onnx(result.path, int8_path(args.output), files, calibration_count=None, progress=True)
        written.append(f"int8 QDQ, per-channel weights ({_mb(quant.size_bytes)}, {quant.quantized_nodes} "
                       f"QuantizeLinear nodes, calibrated on {quant.calibration_images} images, "
                       f"{time.perf_counter() - start:.1f} s) -> {quant.path}")
    return result, written


def print_summary(args: argparse.Namespace, result: Any, written: list[str]) -> None:
    info = result.info
    h, w = info.image_size
    names = info.label_map.names
    pp = info.postprocess
    print(f"exported {args.checkpoint}: {len(names)} classes "
          f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}), "
          f"input images float32[{'batch' if args.dynamic_batch else 1}, 3, {h}, {w}] "
          f"normalised with mean {list(info.mean)} std {list(info.std)}, {result.num_anchors} anchors")
    if info.with_nms:
        print(f"NMS in the graph: score > {pp['score_threshold']}, IoU {pp['nms_threshold']}, top-{pp['topk_candidates']} "
              f"per class, at most {pp['max_detections']} detections per image (boxes in input pixels)")
    print("wrote:")
    for line in written:
        print(f"  {line}")
    first = int8_path(args.output) if args.int8 else args.output
    print(f"try: python tools/predict.py --checkpoint {first} --backend onnx --input IMAGES --output DIR")


# --- ExecuTorch (.pte) ------------------------------------------------------------------------------


def _program_line(kind: str, result: Any, seconds: float) -> list[str]:
    """What one program export wrote: the program, its sidecar, and any operator XNNPACK did not take."""
    if result.int8:
        detail = (f"{_mb(result.size_bytes)}, calibrated on {result.calibration_images} images, int8 vs fp32 "
                  f"PyTorch max |diff| {result.max_abs_diff:.2e}")
    else:
        detail = f"{_mb(result.size_bytes)}, ExecuTorch vs PyTorch max |diff| {result.max_abs_diff:.2e}"
    lines = [f"{kind} ({detail}, {result.delegated_ops} operators in XNNPACK, {seconds:.1f} s) -> {result.path}",
             f"  its metadata sidecar -> {result.sidecar}"]
    if result.undelegated_ops:
        lines.append(f"  warning: left to portable kernels (slower): {result.undelegated_ops}")
    return lines


def _calibration_images(args: argparse.Namespace) -> list[Path]:
    from detector.deploy.quantize import find_calibration_images

    return find_calibration_images(args.calibration_images, args.calibration_count)


def export_detector_pte(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The fp32 program (and the int8 one with ``--int8``); returns the fp32 result and what was written."""
    from detector.checkpoint import load_checkpoint
    from detector.deploy.executorch_export import export_executorch

    model, label_map = load_checkpoint(args.checkpoint, map_location="cpu")
    files = _calibration_images(args) if args.int8 else None  # a bad folder fails before minutes of lowering
    print("exporting fp32 (torch.export, lowering to XNNPACK: a minute or so) ...", flush=True)
    start = time.perf_counter()
    max_batch = PTE_MAX_BATCH if args.dynamic_batch else 1
    result = export_executorch(model, label_map, args.output, image_size=args.image_size, max_batch=max_batch)
    written = _program_line("fp32 ExecuTorch program, XNNPACK", result, time.perf_counter() - start)
    if files is not None:
        print(f"exporting int8 (calibration on {len(files)} images, then lowering) ...", flush=True)
        start = time.perf_counter()
        quant = export_executorch(model, label_map, int8_path(args.output), image_size=args.image_size, int8=True,
                                  calibration_images=files, calibration_count=None, progress=True,
                                  max_batch=max_batch)
        written += _program_line("int8 ExecuTorch program, XNNPACK, per-channel int8 weights", quant,
                                 time.perf_counter() - start)
    return result, written


def print_pte_summary(args: argparse.Namespace, result: Any, written: list[str]) -> None:
    info = result.info
    h, w = info.image_size
    names = info.label_map.names
    batch = f"B<={PTE_MAX_BATCH}" if args.dynamic_batch else "1"
    print(f"exported {args.checkpoint}: {len(names)} classes "
          f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}), "
          f"input images float32[{batch}, 3, {h}, {w}] normalised with mean {list(info.mean)} std {list(info.std)}, "
          f"{result.num_anchors} anchors")
    batch = "B" if args.dynamic_batch else "1"
    print(f"outputs: cls_logits [{batch}, {result.num_anchors}, {len(names) + 1}], bbox_regression "
          f"[{batch}, {result.num_anchors}, 4]: decode them with the anchors and settings of the sidecar (docs/executorch.md)")
    print("wrote:")
    for line in written:
        print(f"  {line}")
    first = int8_path(args.output) if args.int8 else args.output
    print(f"try: python tools/predict.py --checkpoint {first} --input IMAGES --output DIR")


def export_classifier_pte(args: argparse.Namespace) -> int:
    """A classifier checkpoint as an ExecuTorch program: logits out, class names in the sidecar."""
    from detector.pretrain import export_classifier_executorch

    files = _calibration_images(args) if args.int8 else None
    outputs = [(args.output, None)] + ([(int8_path(args.output), files)] if files is not None else [])
    for path, calibration in outputs:
        start = time.perf_counter()
        result = export_classifier_executorch(args.checkpoint, path, image_size=args.image_size,
                                              int8=calibration is not None, calibration_images=calibration,
                                              calibration_count=None)
        kind = "int8" if result.int8 else "fp32"
        print(f"exported classifier {args.checkpoint} (logits out, class names in the sidecar) as an {kind} "
              f"ExecuTorch program ({_mb(result.size_bytes)}, {time.perf_counter() - start:.1f} s) -> {result.path} "
              f"(+ {result.sidecar})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from detector.pretrain import is_classifier_checkpoint

    try:
        if is_pte(args.output):
            if is_classifier_checkpoint(args.checkpoint):
                return export_classifier_pte(args)
            result, written = export_detector_pte(args)
            print_pte_summary(args, result, written)
            return 0
        if is_classifier_checkpoint(args.checkpoint):
            return export_classifier(args)
        result, written = export_detector(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(args, result, written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
