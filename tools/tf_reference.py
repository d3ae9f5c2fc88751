"""TensorFlow's side of ``tools/tf_equivalence.py``: run a TF Object Detection API frozen graph on
images and record what it computes. Runs in the TensorFlow environment only (``make tf-env``:
``tensorflow-cpu``, never a dependency of this project), and imports nothing of this package:

    .venv-tf/bin/python tools/tf_reference.py --graph frozen_inference_graph.pb --images in.npz --output tf.npz

``in.npz`` holds ``image_0`` .. ``image_{N-1}``, ``HxWx3`` uint8 RGB, each fed alone to the graph's
``image_tensor``. ``tf.npz`` holds, per image ``i``: ``preprocessed_i`` (the graph's resized,
normalised input ``[300, 300, 3]``), ``box_encodings_i`` ``[A, 4]`` (TF's ``(ty, tx, th, tw)``),
``class_logits_i`` ``[A, C]`` (background first), ``detection_boxes_i`` ``[100, 4]`` (``(ymin, xmin,
ymax, xmax)``, 0..1 of the image), ``detection_scores_i``, ``detection_classes_i`` (1-based) and
``num_detections_i``; and ``anchors`` ``[A, 4]`` (``(ymin, xmin, ymax, xmax)``, 0..1), the graph's own.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF's own kernels: the same numbers on every CPU
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FETCHES = {
    "preprocessed": "Preprocessor/sub:0",
    "box_encodings": "Postprocessor/raw_box_encodings:0",
    "class_logits": "concat_1:0",
    "anchors": "Concatenate/concat:0",
    "detection_boxes": "detection_boxes:0",
    "detection_scores": "detection_scores:0",
    "detection_classes": "detection_classes:0",
    "num_detections": "num_detections:0",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", required=True, help="frozen_inference_graph.pb")
    parser.add_argument("--images", required=True, help=".npz of uint8 HxWx3 RGB arrays image_0 ..")
    parser.add_argument("--output", required=True, help=".npz to write")
    args = parser.parse_args(argv)

    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    with open(args.graph, "rb") as handle:
        graph_def.ParseFromString(handle.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    images = np.load(args.images)
    count = len([k for k in images.files if k.startswith("image_")])
    out: dict[str, np.ndarray] = {}
    with tf.compat.v1.Session(graph=graph) as session:
        for i in range(count):
            image = images[f"image_{i}"]
            values = session.run(FETCHES, feed_dict={"image_tensor:0": image[None]})
            for key, value in values.items():
                if key == "anchors":
                    out["anchors"] = value
                else:
                    out[f"{key}_{i}"] = value[0]
            print(f"image {i}: {image.shape[1]}x{image.shape[0]}, {int(values['num_detections'][0])} detections",
                  file=sys.stderr)
    np.savez(args.output, tensorflow_version=np.array(tf.__version__), **out)
    print(f"wrote {args.output} ({count} images, TensorFlow {tf.__version__})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
