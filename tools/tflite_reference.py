"""TFLite's side of ``tools/tflite_equivalence.py``: run a ``.tflite`` classifier with TFLite's own
interpreter on images and record its integer outputs. Runs in the LiteRT environment only
(``make litert-env``: ``ai-edge-litert``, never a dependency of this project), and imports nothing of
this package:

    .venv-litert/bin/python tools/tflite_reference.py --model m.tflite --images in.npz --output out.npz

``in.npz`` holds ``image_0`` .. ``image_{N-1}``: ``224x224x3`` uint8 RGB, already resized and cropped,
fed unchanged as the model's quantised input. ``out.npz`` holds ``output_i`` (the raw integer
output, ``[1001]``), ``probabilities_i`` (dequantised: ``scale * (q - zero_point)``), and
``output_scale``, ``output_zero_point``.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a .tflite classifier")
    parser.add_argument("--images", required=True, help=".npz of uint8 224x224x3 RGB arrays image_0 ..")
    parser.add_argument("--output", required=True, help=".npz to write")
    parser.add_argument("--threads", type=int, default=1, help="the interpreter's threads")
    parser.add_argument("--time", type=int, default=0, metavar="N",
                        help="also time N invocations on image_0 after 5 untimed ones; print the median ms as JSON")
    args = parser.parse_args(argv)

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=args.model, num_threads=args.threads)
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    (sink,) = interpreter.get_output_details()
    scale, zero_point = sink["quantization"]
    images = np.load(args.images)
    outputs = {"output_scale": np.float64(scale), "output_zero_point": np.int64(zero_point)}
    for i in range(len(images.files)):
        image = images[f"image_{i}"]
        if image.shape != tuple(source["shape"][1:]) or image.dtype != source["dtype"]:
            print(f"image_{i}: {image.shape} {image.dtype}, the model takes {source['shape']} {source['dtype']}",
                  file=sys.stderr)
            return 2
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        raw = interpreter.get_tensor(sink["index"])[0].copy()
        outputs[f"output_{i}"] = raw
        outputs[f"probabilities_{i}"] = (raw.astype(np.float64) - zero_point) * scale
    np.savez(args.output, **outputs)
    if args.time:
        import json
        import time

        interpreter.set_tensor(source["index"], images["image_0"][None])
        times = []
        for i in range(5 + args.time):
            start = time.perf_counter()
            interpreter.invoke()
            if i >= 5:
                times.append(time.perf_counter() - start)
        print(json.dumps({"median_ms": float(np.median(times) * 1000), "runs": args.time, "threads": args.threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
