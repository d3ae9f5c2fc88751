#!/usr/bin/env python
"""Quality at a fixed budget: this project's quickstart recipe against torchvision's
``ssdlite320_mobilenet_v3_large`` trained from scratch, on the same synthetic set, with the same
batch size and the same number of optimisation steps; both scored on the val split with pycocotools.

    python benchmarks/training_budget.py --threads 2 --json runs/benchmark_training/results.json

The two recipes, each as its authors ship it:

- **ours**: exactly what ``configs/quickstart.yaml`` builds (``DetectorModule`` + ``DetectionDataModule``
  through ``detector.training.cli``, Lightning on the CPU: SSDLite-MobileNetV2 width 0.5 at 256 px,
  ``light`` augmentation, six default boxes per location on every level, positives from IoU 0.3,
  Nesterov SGD lr 0.2 per 16 images, warmup then cosine). Only three things
  are overridden: ``max_steps`` (the budget), the run folder, and validation during training, which is
  switched off (it does not change the weights and would sit inside the timed loop); the final
  weights are validated once at the end with the module's own validation (``trainer.validate``).
- **torchvision**: ``ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
  num_classes=K+1)``, its reference "ssdlite" augmentation (``RandomIoUCrop`` + ``RandomHorizontalFlip``,
  ``transforms.v2``, then ``SanitizeBoundingBoxes``), its own preprocessing (``model.transform``:
  normalise, resize to 320x320) and its published SGD recipe (lr 0.15 per 192 images, momentum 0.9,
  weight decay 4e-5 on every parameter, linear warmup from 0.001 over at most 1000 steps of the first
  epoch, cosine) scaled linearly to the batch size and squeezed onto the same step budget
  (``--torchvision-lr`` sets the learning rate instead). It keeps the images without objects, like
  ours (the reference drops them on COCO), so both see the same set.

Both are scored with :class:`detector.evaluation.CocoEvaluator` (pycocotools backend) over every val
image, each with its own post-processing defaults; torchvision's labels 1..K map to category ids
through the ``LabelMap`` of the training annotations.

Throughput (images/s) is measured over the training loop (data loading, forward, backward, step,
logging) from the end of step ``--skip-steps`` to the end of the last step, so start-up and the
first slow steps are excluded. Both use ``--threads`` intra-op threads and the quickstart's number
of loader workers.

Output: a table on stdout, ``--json OUT`` (and always ``OUTPUT_DIR/results.json``), our run in
``OUTPUT_DIR/quickstart/`` (Lightning logs, ``checkpoints/last.ckpt``) and torchvision's final
weights in ``OUTPUT_DIR/torchvision/last.pt``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Spinning OpenMP threads fight other processes for the cores of a shared machine; passive waiting
# must be chosen before torch loads OpenMP. It applies to both recipes alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightning
import torch
import torchvision
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.transforms import v2
from tqdm import tqdm


from detector.data.coco import load_coco_json
from detector.data.io import load_image
from detector.evaluation.coco import CocoEvaluator
from detector.labels import LabelMap
from detector.training.cli import main as train_cli

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_CONFIG = ROOT / "configs" / "quickstart.yaml"
# torchvision's published SSDLite recipe (references/detection/README.md): 8 GPUs x 24 images, lr 0.15.
TV_REFERENCE_LR = 0.15
TV_REFERENCE_BATCH = 192
TV_MOMENTUM = 0.9
TV_WEIGHT_DECAY = 4e-5
TV_WARMUP_FACTOR = 1e-3
TV_MAX_WARMUP_STEPS = 1000
TV_IMAGE_SIZE = 320  # ssdlite320's model.transform resizes every image to 320x320
RESULT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


# --- settings ---------------------------------------------------------------------------------

def read_quickstart(config: Path) -> dict[str, Any]:
    """The quickstart YAML as a dict (``trainer`` / ``model`` / ``data`` sections)."""
    with config.open("r", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def count_images(annotation_file: Path) -> int:
    """Images listed in a COCO annotation file."""
    return len(load_coco_json(annotation_file)["images"])


def quickstart_steps(config: dict[str, Any], num_train: int, batch_size: int) -> int:
    """The quickstart's own step count: ``max_epochs x batches per epoch``.

    Its train loader drops the last partial batch (``drop_last=True``), so an epoch is
    ``floor(num_train / batch_size)`` steps (62 for 1000 images of 16), not the ceiling.
    """
    return int(config["trainer"]["max_epochs"]) * (num_train // batch_size)


class StepClock:
    """Time stamps and image counts of training steps; throughput excludes the first ``skip`` steps.

    ``record(images)`` is called at the end of every optimisation step. ``images_per_s`` is the
    images of steps ``skip+1..N`` over the wall time from the end of step ``skip`` to the end of step
    ``N``, so it counts everything the loop does between steps (data loading included). At least the
    first step is always left out (nothing marks its start) and at least one is always measured.
    """

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.stamps: list[float] = []
        self.images: list[int] = []

    def record(self, images: int) -> None:
        self.stamps.append(time.perf_counter())
        self.images.append(images)

    @property
    def steps(self) -> int:
        return len(self.stamps)

    def summary(self) -> dict[str, float | int]:
        """``{"images_per_s", "skipped_steps", "measured_steps", "measured_images", "measured_s", "steps"}``."""
        if self.steps < 2:
            raise RuntimeError(f"throughput needs at least 2 training steps, got {self.steps}")
        skipped = max(1, min(self.skip, self.steps - 1))
        seconds = self.stamps[-1] - self.stamps[skipped - 1]
        images = sum(self.images[skipped:])
        return {
            "images_per_s": images / seconds,
            "skipped_steps": skipped,
            "measured_steps": self.steps - skipped,
            "measured_images": images,
            "measured_s": seconds,
            "steps": self.steps,
        }


class LightningStepClock(Callback):
    """Feeds a :class:`StepClock` from Lightning's ``on_train_batch_end`` (one optimiser step per batch)."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.clock.record(int(batch[0].shape[0]))


def metric_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The COCO summary values of a ``detector.evaluation.coco`` metrics dict, plus image/detection counts."""
    out: dict[str, Any] = {key: float(metrics[key]) for key in RESULT_KEYS}
    out["num_images"] = int(metrics["num_images"])
    out["num_detections"] = int(metrics["num_detections"])
    return out


# --- ours: the quickstart through the project's CLI -------------------------------------------

def train_quickstart(args: argparse.Namespace, config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Build ``configs/quickstart.yaml`` with the project's CLI, train ``args.steps`` steps, validate.

    Returns ``{"recipe": {...}, "result": {AP.., images_per_s, ...}}``.
    """
    data = args.data
    overrides: dict[str, Any] = {
        "data.train_images": data / "train",
        "data.train_annotations": data / "train.json",
        "data.val_images": data / "val",
        "data.val_annotations": data / "val.json",
        "data.batch_size": args.batch_size,
        "trainer.max_steps": args.steps,
        "trainer.max_epochs": -1,  # the step budget alone ends the run, whatever the batch size
        # No validation inside the timed loop; the final weights are validated once below.
        "trainer.check_val_every_n_epoch": 10**9,
        "trainer.default_root_dir": run_dir,
        "data.num_workers": args.num_workers,
        "model.width_mult": args.width_mult,
        "data.image_size": args.image_size,
    }
    cli_args = ["--config", str(args.config)]
    cli_args += [f"--{key}={value}" for key, value in overrides.items() if value is not None]
    # LightningCLI warns when sys.argv carries arguments besides ``args``: this tool's own flags do.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = train_cli(cli_args, run=False)
    finally:
        sys.argv = argv
    trainer, module, datamodule = cli.trainer, cli.model, cli.datamodule
    clock = StepClock(args.skip_steps)
    trainer.callbacks.append(LightningStepClock(clock))

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    train_s = time.perf_counter() - start
    final_loss = _final_loss(trainer)  # read before validate() replaces the callback metrics
    if clock.steps != args.steps:
        raise RuntimeError(f"our recipe ran {clock.steps} steps, expected {args.steps}")
    # With validation off during training Lightning writes no checkpoint; keep the final state.
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(checkpoint)

    start = time.perf_counter()
    trainer.validate(module, datamodule=datamodule, verbose=False)
    eval_s = time.perf_counter() - start
    assert module.evaluator is not None and module.evaluator.last_run is not None
    metrics = module.evaluator.last_run.metrics

    hp = module.hparams
    recipe = {
        "name": "quickstart",
        "config": os.path.relpath(args.config, ROOT),
        "model": hp.preset,
        "width_mult": float(hp.width_mult),
        "neck": hp.neck,
        "image_size": int(datamodule.image_size),
        "augment": datamodule.augment,
        "optimizer": f"{hp.optimizer} (nesterov)" if hp.optimizer == "sgd" else hp.optimizer,
        "lr": float(hp.lr),
        "momentum": float(hp.momentum),
        "weight_decay": float(hp.weight_decay),
        "weight_decay_on": "conv weights only (not BatchNorm, not biases)",
        "warmup_steps": int(min(hp.warmup_steps, args.steps - 1)),
        "schedule": "linear warmup, then cosine to 0 at the last step",
        "ema_decay": hp.ema_decay,
        "channels_last": bool(hp.channels_last),
        "params": sum(p.numel() for p in module.model.parameters()),
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint),
    }
    result = {**metric_summary(metrics), **clock.summary(), "train_s": train_s, "eval_s": eval_s,
              "final_loss": final_loss}
    return {"recipe": recipe, "result": result}


def _final_loss(trainer: Trainer) -> float | None:
    value = trainer.callback_metrics.get("train/loss")
    return float(value) if value is not None else None


# --- torchvision: ssdlite320_mobilenet_v3_large with its reference recipe ---------------------

class TorchvisionCoco(Dataset):
    """COCO-format images and boxes for torchvision's detection models.

    Item: ``(image, target)`` after ``transform``: ``image`` FloatTensor[3, H, W] in 0..1 (original
    resolution; the model's own transform resizes), ``target = {"boxes": FloatTensor[N, 4] xyxy pixels,
    "labels": Int64Tensor[N] in 1..K, "image_id": int}``. Crowd and zero-size boxes are left out.
    """

    def __init__(self, images_dir: Path, annotation_file: Path, label_map: LabelMap,
                 transform: Callable[..., Any]) -> None:
        coco = load_coco_json(annotation_file)
        self.images_dir = images_dir
        self.images = sorted(coco["images"], key=lambda im: int(im["id"]))
        self.label_map = label_map
        self.transform = transform
        self.boxes: dict[int, list[tuple[list[float], int]]] = {int(im["id"]): [] for im in self.images}
        for ann in coco["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann.get("iscrowd", 0) or w <= 0 or h <= 0 or int(ann["image_id"]) not in self.boxes:
                continue
            label = label_map.label_of_category(int(ann["category_id"]))
            self.boxes[int(ann["image_id"])].append(([x, y, x + w, y + h], label))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        info = self.images[index]
        array = load_image(self.images_dir / info["file_name"])  # HxWx3 uint8 RGB
        image = tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1).contiguous())
        rows = self.boxes[int(info["id"])]
        boxes = torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(array.shape[:2])),
            "labels": torch.tensor([r[1] for r in rows], dtype=torch.int64),
            "image_id": int(info["id"]),
        }
        return self.transform(image, target)


def torchvision_train_transform() -> v2.Compose:
    """The reference "ssdlite" pipeline (references/detection/presets.py, v2 transforms)."""
    return v2.Compose([
        v2.RandomIoUCrop(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.ToDtype(torch.float32, scale=True),
        v2.SanitizeBoundingBoxes(),  # drops the boxes RandomIoUCrop left outside the crop
        v2.ToPureTensor(),
    ])


def torchvision_eval_transform() -> v2.Compose:
    """The reference evaluation pipeline: only uint8 -> float 0..1 (the model resizes)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])


def _list_collate(batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    images, targets = zip(*batch)
    return list(images), list(targets)


def torchvision_schedule(steps: int, warmup: int) -> Callable[[int], float]:
    """LR factor of step ``s``: the reference's per-step linear warmup (from 0.001 over ``warmup``
    steps) times its cosine decay, here per step over the whole budget instead of per epoch."""

    def factor(step: int) -> float:
        warm = TV_WARMUP_FACTOR + (1 - TV_WARMUP_FACTOR) * min(1.0, step / max(1, warmup)) if warmup else 1.0
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, steps))))

    return factor


def train_torchvision(args: argparse.Namespace, label_map: LabelMap, run_dir: Path, seed: int) -> dict[str, Any]:
    """Train ``ssdlite320_mobilenet_v3_large`` from scratch for ``args.steps`` steps, then evaluate it.

    Returns ``{"recipe": {...}, "result": {AP.., images_per_s, ...}}``.
    """
    torch.manual_seed(seed)
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=label_map.num_classes)
    dataset = TorchvisionCoco(args.data / "train", args.data / "train.json", label_map, torchvision_train_transform())
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.num_workers,
        collate_fn=_list_collate, generator=torch.Generator().manual_seed(seed),
        persistent_workers=args.num_workers > 0,
    )
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training images make no batch of {args.batch_size}")
    lr = args.torchvision_lr if args.torchvision_lr is not None else TV_REFERENCE_LR * args.batch_size / TV_REFERENCE_BATCH
    # The reference's warmup covers at most 1000 steps of the first epoch.
    warmup = min(TV_MAX_WARMUP_STEPS, len(loader) - 1, args.steps - 1)
    params = [p for p in model.parameters() if p.requires_grad]
    # The reference applies weight decay to every parameter unless --norm-weight-decay is given.
    optimizer = torch.optim.SGD(params, lr=lr, momentum=TV_MOMENTUM, weight_decay=TV_WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, torchvision_schedule(args.steps, warmup))

    clock = StepClock(args.skip_steps)
    model.train()
    step, loss_value = 0, float("nan")
    start = time.perf_counter()
    with tqdm(total=args.steps, desc="torchvision ssdlite320", unit="step") as bar:
        while step < args.steps:
            for images, targets in loader:
                targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
                losses = model(images, targets)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"torchvision: non-finite loss at step {step}: {losses}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                clock.record(len(images))
                loss_value = loss.detach().item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}")
                if step >= args.steps:
                    break
    train_s = time.perf_counter() - start
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = run_dir / "last.pt"
    torch.save({"state_dict": model.state_dict(), "label_map": label_map.to_dict()}, weights)

    start = time.perf_counter()
    metrics = evaluate_torchvision(model, args, label_map)
    eval_s = time.perf_counter() - start
    recipe = {
        "name": "torchvision reference (ssdlite)",
        "model": "ssdlite320_mobilenet_v3_large",
        "weights": None,
        "weights_backbone": None,
        "image_size": TV_IMAGE_SIZE,
        "augment": "RandomIoUCrop + RandomHorizontalFlip(0.5) (transforms.v2, SanitizeBoundingBoxes)",
        "optimizer": "sgd",
        "lr": lr,
        "lr_rule": ("--torchvision-lr" if args.torchvision_lr is not None
                    else f"{TV_REFERENCE_LR} x batch / {TV_REFERENCE_BATCH} (linear scaling of the reference)"),
        "momentum": TV_MOMENTUM,
        "weight_decay": TV_WEIGHT_DECAY,
        "weight_decay_on": "every parameter (the reference's default)",
        "warmup_steps": warmup,
        "schedule": "linear warmup from 0.001, times cosine to 0 at the last step",
        "params": sum(p.numel() for p in model.parameters()),
        "run_dir": str(run_dir),
        "checkpoint": str(weights),
    }
    result = {**metric_summary(metrics), **clock.summary(), "train_s": train_s, "eval_s": eval_s,
              "final_loss": loss_value}
    return {"recipe": recipe, "result": result}


@torch.inference_mode()
def evaluate_torchvision(model: torch.nn.Module, args: argparse.Namespace, label_map: LabelMap) -> dict[str, Any]:
    """COCO metrics of ``model`` on the val split (every image; boxes in original pixels)."""
    dataset = TorchvisionCoco(args.data / "val", args.data / "val.json", label_map, torchvision_eval_transform())
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers,
                        collate_fn=_list_collate)
    evaluator = CocoEvaluator(args.data / "val.json", label_map=label_map, backend="pycocotools", all_images=True)
    model.eval()
    for images, targets in tqdm(loader, desc="torchvision val", unit="batch"):
        predictions = model(images)  # [{"boxes" [N, 4] xyxy original pixels, "scores" [N], "labels" [N] in 1..K}]
        evaluator.process([t["image_id"] for t in targets], predictions)
    return evaluator.evaluate()


# --- report -----------------------------------------------------------------------------------

def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per recipe: input size, parameters, AP, AP50, AP75, images/s."""
    header = f"{'recipe':<44} {'input':>7} {'params':>8} {'AP':>6} {'AP50':>6} {'AP75':>6} {'img/s':>7}"
    lines = [header, "-" * len(header)]
    for name, entry in results.items():
        recipe, result = entry["recipe"], entry["result"]
        label = f"{name}: {recipe['model']}"
        lines.append(
            f"{label:<44} {recipe['image_size']:>7d} {recipe['params'] / 1e6:>7.2f}M {result['AP']:>6.3f} "
            f"{result['AP50']:>6.3f} {result['AP75']:>6.3f} {result['images_per_s']:>7.2f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic",
                        help="synthetic set: DIR/{train,val}/ and DIR/{train,val}.json (tools/make_synthetic.py)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimisation steps for both (default: the quickstart's, max_epochs x batches per epoch)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step for both (default: the quickstart's)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--skip-steps", type=int, default=5,
                        help="first steps left out of the throughput (start-up, allocator warm-up)")
    parser.add_argument("--torchvision-lr", type=float, default=None,
                        help="torchvision's peak learning rate (default: 0.15 x batch / 192, its recipe scaled linearly)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "benchmark_training",
                        help="runs go to OUTPUT_DIR/quickstart/ and OUTPUT_DIR/torchvision/")
    # For quick runs (tests) only: they change our recipe, so published figures never use them.
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=argparse.SUPPRESS)
    parser.add_argument("--width-mult", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--num-workers", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data = args.data.resolve()
    for path in (args.data / "train", args.data / "val", args.data / "train.json", args.data / "val.json"):
        if not path.exists():
            raise SystemExit(f"{path} not found: make the set with tools/make_synthetic.py --output {args.data}")
    config = read_quickstart(args.config)
    args.batch_size = args.batch_size or int(config["data"]["batch_size"])
    if args.num_workers is None:
        args.num_workers = int(config["data"].get("num_workers", 0))
    num_train, num_val = count_images(args.data / "train.json"), count_images(args.data / "val.json")
    if args.steps is None:
        args.steps = quickstart_steps(config, num_train, args.batch_size)
    if args.steps < 2:
        raise SystemExit(f"--steps must be at least 2 (got {args.steps})")
    torch.set_num_threads(args.threads)
    seed = int(config.get("seed_everything", 0))
    label_map = LabelMap.from_categories(load_coco_json(args.data / "train.json")["categories"])
    output = args.output_dir.resolve()
    output.mkdir(parents=True, exist_ok=True)
    print(f"{num_train} train / {num_val} val images, {label_map.num_classes - 1} classes; "
          f"{args.steps} steps of {args.batch_size} images each; {args.threads} threads")

    results = {
        "ours": train_quickstart(args, config, output / "quickstart"),
        "torchvision": train_torchvision(args, label_map, output / "torchvision", seed),
    }
    ours, tv = results["ours"]["result"], results["torchvision"]["result"]
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name if argv is None else "training_budget.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"cores": os.cpu_count() or 0, "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "torchvision": torchvision.__version__, "lightning": lightning.__version__},
        "settings": {"data": str(args.data), "train_images": num_train, "val_images": num_val,
                     "num_classes": label_map.num_classes, "steps": args.steps, "batch_size": args.batch_size,
                     "threads": args.threads, "num_workers": args.num_workers, "skip_steps": args.skip_steps,
                     "seed": seed, "eval_backend": "pycocotools"},
        "recipes": {name: entry["recipe"] for name, entry in results.items()},
        "results": {name: entry["result"] for name, entry in results.items()},
        "ap_difference": ours["AP"] - tv["AP"],
        "throughput_ratio": ours["images_per_s"] / tv["images_per_s"],
    }

    print()
    print(format_table(results))
    print(f"\nsame budget: {args.steps} steps x {args.batch_size} images; val mAP@[.5:.95] ours - torchvision = "
          f"{report['ap_difference']:+.3f}; training throughput ours / torchvision = {report['throughput_ratio']:.2f}x")
    text = json.dumps(report, indent=2, default=float)
    written = [output / "results.json"]
    written[0].write_text(text + "\n")
    if args.json is not None and args.json.resolve() != written[0]:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        written.append(args.json)
    print("\nwrote:")
    print(f"  our run (Lightning logs, config, checkpoints/last.ckpt): {results['ours']['recipe']['run_dir']}")
    print(f"  torchvision's final weights: {results['torchvision']['recipe']['checkpoint']}")
    for path in written:
        print(f"  results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
