#!/usr/bin/env python
"""The Ultralytics YOLO11n reference of issue #22: ``yolo11n.yaml`` trained from scratch on a COCO-format
set for a given budget (steps x batch images), then run over the val images; its detections are written
in the COCO results format for ``tools/eval.py --detections`` (pycocotools), like the other recipes.

Runs in the benchmark-only environment (``make yolo-env``: ``.venv-yolo``, Ultralytics pins its own
OpenCV), so it imports Ultralytics and the standard library only, never ``detector``::

    .venv-yolo/bin/python benchmarks/yolo_reference.py \
        --train-images data/synthetic/train --train-annotations data/synthetic/train.json \
        --val-images data/synthetic/val --val-annotations data/synthetic/val.json \
        --steps 744 --batch-size 16 --image-size 256 --settings default --output-dir runs/yolo11n_default

``benchmarks/training_budget.py --yolo-python .venv-yolo/bin/python`` runs it next to ours and torchvision's.

- **Budget.** Ultralytics trains whole epochs, each every train image once (its last batch may be
  partial). ``epochs = ceil(steps x batch / train images)``, and training stops (Ultralytics' own
  ``trainer.stop``, between batches) at the first batch that brings the images seen to
  ``steps x batch``; the learning rate is set per epoch, so a cut-short last epoch keeps its schedule.
  The summary reports the batches (``steps``), optimizer steps and images actually seen.
- **settings=default**: Ultralytics' defaults (optimizer ``auto``, lr, warmup 3 epochs, mosaic with
  ``close_mosaic`` 10, EMA, nominal batch ``nbs`` 64, i.e. gradients accumulated over ``64 / batch``
  batches) except what must match or cannot run here: ``imgsz``, ``batch``, ``epochs``, CPU, ``seed``,
  no pretrained weights, AMP off, no plots, no validation during training.
- **settings=adapted**: also ``warmup_epochs=1`` and ``nbs=batch`` (one optimizer step per batch).

Offline: ``YOLO_OFFLINE=1``; the settings file goes to ``OUTPUT_DIR/config`` (``YOLO_CONFIG_DIR``), not
the home folder; AMP off on the CPU skips the AMP check's ``yolo11n.pt`` download and ``plots=False``
the font (``Arial.ttf``) download.

Output in ``OUTPUT_DIR``: ``dataset/`` (the YOLO copy: image links, label files, ``data.yaml``),
``train/`` (Ultralytics' run: ``weights/last.pt``), ``summary.json``; the detections in
``--detections-out`` (default ``OUTPUT_DIR/detections.json``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SETTINGS = ("default", "adapted")
MODEL_CONFIG = "yolo11n.yaml"  # the architecture only: built with random weights, nothing downloaded
# Ultralytics' val defaults for the mAP: conf 0.001, NMS IoU 0.7; at most 100 boxes per image, the cap of
# our model's post-processing and of COCO's AP (Ultralytics' own val keeps 300).
PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET = 0.001, 0.7, 100


# ----------------------------------------------------------------------------------------------------
# COCO <-> YOLO conversion (pure: tested in the project's environment, without Ultralytics)


def category_ids(categories: Iterable[dict[str, Any]]) -> list[int]:
    """COCO category ids in ascending order: YOLO class ``i`` is ``category_ids(...)[i]``."""
    ids = sorted(int(c["id"]) for c in categories)
    if len(set(ids)) != len(ids):
        raise ValueError(f"repeated category ids: {ids}")
    return ids


def category_names(categories: Iterable[dict[str, Any]]) -> list[str]:
    """Class names in YOLO class order (ascending COCO id)."""
    by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    return [by_id[i] for i in sorted(by_id)]


def yolo_label_line(bbox: Sequence[float], width: float, height: float, cls: int) -> str | None:
    """A COCO box ``[x, y, w, h]`` (pixels) as a YOLO label line ``"cls cx cy w h"`` (fractions of the
    image), clipped to the image; ``None`` when nothing of it is left inside. Ultralytics rejects an
    image's labels outright when a coordinate lies outside [0, 1], hence the clipping."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x1 <= x0 or y1 <= y0:
        return None
    values = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)
    return " ".join([str(int(cls)), *(f"{v:.6g}" for v in values)])


def yolo_line_to_coco(line: str, width: float, height: float) -> tuple[int, list[float]]:
    """The inverse of :func:`yolo_label_line`: ``(cls, [x, y, w, h])`` in pixels."""
    cls, cx, cy, w, h = line.split()
    bw, bh = float(w) * width, float(h) * height
    return int(cls), [float(cx) * width - bw / 2, float(cy) * height - bh / 2, bw, bh]


def label_file_name(file_name: str) -> str:
    """The flat name an image gets in the YOLO copy: COCO ``file_name`` may hold folders (CARLA's
    ``train/Town02_003720.png``), and Ultralytics finds a label by replacing the last ``/images/`` of
    the image path with ``/labels/``, which a nested ``images`` folder would break."""
    return file_name.replace("\\", "/").replace("/", "__")


def coco_to_yolo_labels(coco: dict[str, Any]) -> dict[int, list[str]]:
    """Image id -> its YOLO label lines, every image present (an image without boxes gets ``[]``, a
    background image for Ultralytics). Crowd annotations are left out: pycocotools ignores detections
    on them rather than counting them as objects, and YOLO has no such notion."""
    index = {cat: i for i, cat in enumerate(category_ids(coco["categories"]))}
    images = {int(im["id"]): im for im in coco["images"]}
    for im in images.values():
        if not im.get("width") or not im.get("height"):
            raise ValueError(f"image {im['id']} ({im.get('file_name')}) has no width/height in the annotations")
    labels: dict[int, list[str]] = {image_id: [] for image_id in images}
    for ann in coco.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        im = images[int(ann["image_id"])]
        line = yolo_label_line(ann["bbox"], im["width"], im["height"], index[int(ann["category_id"])])
        if line is not None:
            labels[int(ann["image_id"])].append(line)
    return labels


def yolo_to_coco_results(image_id: int, xyxy: Sequence[Sequence[float]], scores: Sequence[float],
                         classes: Sequence[int], ids: Sequence[int]) -> list[dict[str, Any]]:
    """One image's Ultralytics detections (corners in pixels of the original image, scores, class
    indices) as COCO results: ``bbox`` is ``[x, y, w, h]``, ``category_id`` the COCO id of the class."""
    results = []
    for (x0, y0, x1, y1), score, cls in zip(xyxy, scores, classes):
        results.append({"image_id": int(image_id), "category_id": int(ids[int(cls)]),
                        "bbox": [round(float(x0), 3), round(float(y0), 3), round(float(x1 - x0), 3),
                                 round(float(y1 - y0), 3)],
                        "score": round(float(score), 5)})
    return results


def training_epochs(target_images: int, num_train: int) -> int:
    """Whole epochs that cover ``target_images`` images of a ``num_train``-image set (the last one may
    be cut short)."""
    if target_images < 1 or num_train < 1:
        raise ValueError(f"need images to train on, got {target_images} to see of a {num_train}-image set")
    return math.ceil(target_images / num_train)


def train_overrides(settings: str, data_yaml: Path, epochs: int, image_size: int, batch_size: int, seed: int,
                    project: Path) -> dict[str, Any]:
    """The arguments of ``YOLO.train``: Ultralytics' defaults but for the budget, the machine and the
    run folder; ``adapted`` adds one warmup epoch and ``nbs = batch`` (no gradient accumulation)."""
    if settings not in SETTINGS:
        raise ValueError(f"settings: one of {SETTINGS}, got {settings!r}")
    overrides: dict[str, Any] = {
        "data": str(data_yaml), "epochs": epochs, "imgsz": image_size, "batch": batch_size, "device": "cpu",
        "workers": 0,  # what Ultralytics forces on the CPU anyway
        "seed": seed, "pretrained": False, "amp": False, "plots": False,
        "val": False,  # Ultralytics still validates once after the last epoch, outside the timed loop
        "project": str(project), "name": "train", "exist_ok": True, "verbose": True,
    }
    if settings == "adapted":
        overrides.update(warmup_epochs=1.0, nbs=batch_size)
    return overrides


# ----------------------------------------------------------------------------------------------------
# Files


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: Path, data: Any) -> None:
    """Written to a temporary file, then renamed: a killed run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_split(coco: dict[str, Any], images_dir: Path, root: Path, split: str) -> dict[str, int]:
    """``root/images/SPLIT/`` (links to the images) and ``root/labels/SPLIT/`` (one text file per image);
    returns link name -> COCO image id."""
    labels = coco_to_yolo_labels(coco)
    image_out, label_out = root / "images" / split, root / "labels" / split
    image_out.mkdir(parents=True)
    label_out.mkdir(parents=True)
    names: dict[str, int] = {}
    for im in coco["images"]:
        name = label_file_name(im["file_name"])
        if name in names:
            raise ValueError(f"{split}: two images named {name!r}")
        source = (images_dir / im["file_name"]).resolve()
        if not source.is_file():
            raise FileNotFoundError(f"{split}: {source} not found")
        (image_out / name).symlink_to(source)
        lines = labels[int(im["id"])]
        (label_out / name).with_suffix(".txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        names[name] = int(im["id"])
    return names


def write_dataset(args: argparse.Namespace, root: Path) -> tuple[Path, dict[str, Any], dict[str, int]]:
    """The YOLO copy of the train and val sets under ``root`` (rebuilt from scratch); returns the
    ``data.yaml``, the train COCO dict and the val link name -> image id."""
    train, val = read_json(args.train_annotations), read_json(args.val_annotations)
    if category_ids(train["categories"]) != category_ids(val["categories"]):
        raise ValueError("train and val annotations list different categories")
    if root.exists():
        shutil.rmtree(root)  # a stale label cache or image link must not leak into this run
    write_split(train, args.train_images, root, "train")
    val_names = write_split(val, args.val_images, root, "val")
    data_yaml = root / "data.yaml"
    # JSON is YAML: no YAML writer needed.
    write_json(data_yaml, {"path": str(root), "train": "images/train", "val": "images/val",
                           "names": category_names(train["categories"])})
    return data_yaml, train, val_names


# ----------------------------------------------------------------------------------------------------
# Training and prediction (Ultralytics imported here only)


class BudgetMeter:
    """Counts what the training loop does and stops it at the image budget. Ultralytics' callbacks see
    the trainer, not the batch, so its ``preprocess_batch`` and ``optimizer_step`` are wrapped."""

    def __init__(self, target_images: int) -> None:
        self.target_images = target_images
        self.stamps: list[float] = []  # perf_counter at the end of every batch
        self.images: list[int] = []  # images of every batch
        self.optimizer_steps = 0
        self.last_loss: float | None = None
        self._batch_images = 0

    def attach(self, model: Any) -> None:
        model.add_callback("on_train_start", self.on_train_start)
        model.add_callback("on_train_batch_end", self.on_train_batch_end)

    def on_train_start(self, trainer: Any) -> None:
        preprocess, step = trainer.preprocess_batch, trainer.optimizer_step

        def counted_preprocess(batch: dict[str, Any]) -> dict[str, Any]:
            self._batch_images = int(batch["img"].shape[0])
            return preprocess(batch)

        def counted_step() -> None:
            self.optimizer_steps += 1
            step()

        trainer.preprocess_batch, trainer.optimizer_step = counted_preprocess, counted_step

    def on_train_batch_end(self, trainer: Any) -> None:
        self.stamps.append(time.perf_counter())
        self.images.append(self._batch_images)
        items = trainer.loss_items
        self.last_loss = float(sum(float(v) for v in (items.values() if isinstance(items, dict) else items)))
        if sum(self.images) >= self.target_images:
            trainer.stop = True  # Ultralytics leaves the batch loop, validates once and saves last.pt


def weights_group(optimizer: Any) -> dict[str, Any]:
    """The optimizer's parameter group of the decayed weights (Ultralytics tags it ``weight``)."""
    groups = [g for g in optimizer.param_groups if g.get("param_group") in ("weight", "muon")]
    return groups[0] if groups else optimizer.param_groups[0]


def train(args: argparse.Namespace, data_yaml: Path, num_train: int, output: Path) -> dict[str, Any]:
    """YOLO11n from scratch for the budget; returns the training summary (``weights``: last.pt)."""
    from ultralytics import YOLO
    from ultralytics.utils import torch_utils

    target = args.steps * args.batch_size
    epochs = training_epochs(target, num_train)
    overrides = train_overrides(args.settings, data_yaml, epochs, args.image_size, args.batch_size, args.seed, output)
    model = YOLO(MODEL_CONFIG)
    meter = BudgetMeter(target)
    meter.attach(model)
    start = time.perf_counter()
    model.train(**overrides)
    total_s = time.perf_counter() - start
    trainer = model.trainer
    if not meter.stamps:
        raise RuntimeError("Ultralytics ran no training batch")
    nb = len(trainer.train_loader)
    final_metrics = {k: float(v) for k, v in (trainer.metrics or {}).items() if isinstance(v, (int, float))}
    summary = {
        "epochs": epochs, "num_train": num_train, "batches_per_epoch": nb,
        "requested_steps": args.steps, "target_images": target,
        "steps": len(meter.stamps), "images_seen": sum(meter.images), "optimizer_steps": meter.optimizer_steps,
        "step_stamps": [s - start for s in meter.stamps], "step_images": meter.images,
        # Like ours (its whole ``fit``): from the call to the end of the last batch, set-up included and
        # Ultralytics' two closing validations left out (``train_call_s`` has them).
        "train_s": meter.stamps[-1] - start, "train_call_s": total_s,
        "final_loss": meter.last_loss, "loss_terms": list(getattr(trainer, "loss_names", ()) or ()),
        "ultralytics_val": final_metrics,
        "train_args": overrides,
        "effective": {  # what Ultralytics derived from them
            "optimizer": str(trainer.args.optimizer), "lr0": float(trainer.args.lr0),
            # optimizer=auto picks its own momentum (AdamW's beta1 0.9), not args.momentum; the weight
            # decay is scaled by batch x accumulate / nbs
            "weight_group": {k: v for k, v in weights_group(trainer.optimizer).items()
                             if k in ("initial_lr", "betas", "momentum", "nesterov", "weight_decay")},
            "nbs": int(trainer.args.nbs),
            "accumulate": min(max(round(trainer.args.nbs / args.batch_size), 1), nb * epochs),
            "warmup_epochs": float(trainer.args.warmup_epochs),
            "warmup_batches": int(trainer._get_warmup_iterations(nb)), "close_mosaic": int(trainer.args.close_mosaic),
            "mosaic": float(trainer.args.mosaic), "mosaic_epochs": max(0, epochs - int(trainer.args.close_mosaic)),
            "cos_lr": bool(trainer.args.cos_lr), "lrf": float(trainer.args.lrf),
            "workers": int(trainer.args.workers), "torch_threads": torch_utils.torch.get_num_threads(),
        },
        # The final weights (EMA, as Ultralytics saves them); its best.pt is the same here, from the one
        # validation after the last batch.
        "weights": str(trainer.last),
    }
    return summary


def predict(model: Any, image_paths: list[Path], image_ids: list[int], ids: Sequence[int],
            image_size: int) -> list[dict[str, Any]]:
    """The trained model over the val images, as COCO results."""
    results: list[dict[str, Any]] = []
    for path, image_id in zip(image_paths, image_ids):
        (result,) = model.predict(source=str(path), imgsz=image_size, conf=PREDICT_CONF, iou=PREDICT_IOU,
                                  max_det=PREDICT_MAX_DET, device="cpu", save=False, verbose=False)
        boxes = result.boxes
        results += yolo_to_coco_results(image_id, boxes.xyxy.tolist(), boxes.conf.tolist(),
                                        [int(c) for c in boxes.cls.tolist()], ids)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for split in ("train", "val"):
        parser.add_argument(f"--{split}-images", type=Path, required=True, help=f"{split} image folder")
        parser.add_argument(f"--{split}-annotations", type=Path, required=True, help=f"{split} COCO JSON")
    parser.add_argument("--steps", type=int, required=True, help="budget: steps of --batch-size images")
    parser.add_argument("--batch-size", type=int, required=True, help="images per batch")
    parser.add_argument("--image-size", type=int, required=True, help="Ultralytics' imgsz (square training input)")
    parser.add_argument("--settings", choices=SETTINGS, default="default",
                        help="default: Ultralytics' own; adapted: also warmup_epochs=1, nbs=batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--detections-out", type=Path, default=None,
                        help="COCO results JSON (default: OUTPUT_DIR/detections.json)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.image_size < 32:
        parser.error("--steps and --batch-size must be positive, --image-size at least 32")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    output = args.output_dir.resolve()
    output.mkdir(parents=True, exist_ok=True)
    detections_out = (args.detections_out or output / "detections.json").resolve()
    # Before Ultralytics (and torch) load: no network, settings inside the run, our thread count
    # (Ultralytics sets OMP_NUM_THREADS=1 when unset), passive OpenMP waiting as in training_budget.py.
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(output / "config")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import ultralytics
    from ultralytics.utils import SETTINGS as YOLO_SETTINGS
    from ultralytics.utils import torch_utils

    # No usage analytics; datasets, weights and runs stay in the output folder.
    YOLO_SETTINGS.update({"sync": False, "datasets_dir": str(output), "weights_dir": str(output / "weights"),
                          "runs_dir": str(output)})
    # select_device() resets torch's threads to NUM_THREADS (cores - 1, at most 8) on the CPU, at training
    # and at prediction alike; --threads must hold for both, as for the other recipes.
    torch_utils.NUM_THREADS = args.threads
    torch_utils.torch.set_num_threads(args.threads)

    data_yaml, train_coco, val_names = write_dataset(args, output / "dataset")
    ids = category_ids(train_coco["categories"])
    summary = train(args, data_yaml, len(train_coco["images"]), output)
    print(f"trained {summary['steps']} batches ({summary['images_seen']} images, {summary['optimizer_steps']} "
          f"optimizer steps, {summary['epochs']} epoch(s) of {summary['batches_per_epoch']} batches) in "
          f"{summary['train_s']:.1f} s", flush=True)

    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops

    model = YOLO(summary["weights"])
    gflops = get_flops(model.model, args.image_size)
    params = sum(p.numel() for p in model.model.parameters())
    val_dir = output / "dataset" / "images" / "val"
    names = sorted(val_names)
    start = time.perf_counter()
    detections = predict(model, [val_dir / n for n in names], [val_names[n] for n in names], ids, args.image_size)
    predict_s = time.perf_counter() - start
    write_json(detections_out, detections)
    summary.update({
        "model": "yolo11n", "model_config": MODEL_CONFIG, "settings": args.settings, "image_size": args.image_size,
        "batch_size": args.batch_size, "seed": args.seed, "threads": args.threads, "params": params,
        # Ultralytics' GFLOPs (thop) count a multiply-add as 2 operations.
        "gflops": gflops, "gmacs": gflops / 2, "predict_s": predict_s, "num_val_images": len(names),
        "num_detections": len(detections), "predict": {"conf": PREDICT_CONF, "iou": PREDICT_IOU,
                                                       "max_det": PREDICT_MAX_DET, "imgsz": args.image_size},
        "category_ids": ids, "detections": str(detections_out), "ultralytics": ultralytics.__version__,
        "torch": torch_utils.torch.__version__, "python": sys.version.split()[0],
    })
    write_json(output / "summary.json", summary)
    print(f"{len(detections)} detections on {len(names)} val images -> {detections_out}\n"
          f"summary -> {output / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
