#!/usr/bin/env python
"""Quality at a fixed budget: this project's quickstart recipe against torchvision's
``ssdlite320_mobilenet_v3_large`` trained from scratch, on the same synthetic set, with the same
batch size and the same number of optimisation steps; both scored on the val split with pycocotools.

    python benchmarks/training_budget.py --threads 2 --json runs/benchmark_training/results.json

Another dataset and recipe: ``--config`` (ours), the four ``--train-*``/``--val-*`` paths (score on a
test split by passing it as ``--val-*``) and ``--torchvision-image-size H W`` (its input; 320 square
by default, its own). ``--same-wall-clock`` adds a third run, ``torchvision_same_time``: torchvision's
recipe with the steps it trains in our training time, from its measured throughput in the same-steps
run (its schedule is sized to that budget, not cut short). For CARLA (``docs/driving.md``):

    python benchmarks/training_budget.py --config configs/driving_carla.yaml --steps 860 \
        --train-images data/carla/images --train-annotations data/carla/train.json \
        --val-images data/carla/images --val-annotations data/carla/test.json \
        --torchvision-image-size 224 384 --same-wall-clock --output-dir runs/benchmark_training_carla

- **ours**: exactly what ``configs/quickstart.yaml`` builds, through ``detector.training.cli``. Only
  ``max_steps`` (the budget), the run folder and validation during training (off: it would sit in
  the timed loop) are overridden; the final weights are validated once with ``trainer.validate``.
- **torchvision**: its reference "ssdlite" recipe (:mod:`detector.training.reference`), learning rate
  scaled linearly to the batch size (``--torchvision-lr`` sets it instead), trained by Lightning.
- **yolo11n_default**, **yolo11n_adapted** (with ``--yolo-python``, issue #22): Ultralytics YOLO11n
  from scratch by ``benchmarks/yolo_reference.py``, run with the python of its own environment
  (``make yolo-env``: ``.venv-yolo/bin/python``), for the same images seen (steps x batch) at our input
  size (its long side when not square), with Ultralytics' default settings and with settings adapted to
  the budget (one warmup epoch, ``nbs`` = batch); its detections are scored by ``tools/eval.py
  --detections``. ``--yolo-settings`` picks one of the two.

Throughput (images/s) covers the training loop from the end of step ``--skip-steps`` to the end of
the last step. Output: a table, ``OUTPUT_DIR/results.json`` (and ``--json OUT``), our run in
``OUTPUT_DIR/quickstart/`` and torchvision's final weights in ``OUTPUT_DIR/torchvision/last.pt``.
"""
from __future__ import annotations

import argparse
import os

# Spinning OpenMP threads fight other processes for the cores of a shared machine; passive waiting
# must be chosen before torch loads OpenMP. It applies to both recipes alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import lightning  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import yaml  # noqa: E402
from lightning.pytorch import Trainer  # noqa: E402

from detector.checkpoint import atomic_save  # noqa: E402
from detector.data.coco import load_coco_json  # noqa: E402
from detector.files import atomic_write_text  # noqa: E402
from detector.labels import LabelMap  # noqa: E402
from detector.training import reference  # noqa: E402
from detector.training.cli import main as train_cli  # noqa: E402
from detector.training.reference import StepClock, StepClockCallback, TorchvisionSSDLite, input_hw  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
YOLO_TOOL = ROOT / "benchmarks" / "yolo_reference.py"
YOLO_SETTINGS = ("default", "adapted")


def quickstart_steps(config: dict[str, Any], num_train: int, batch_size: int) -> int:
    """The quickstart's own step count: ``max_epochs x batches per epoch``; its train loader drops the
    last partial batch, so an epoch is ``floor(num_train / batch_size)`` steps (62 for 1000 of 16)."""
    return int(config["trainer"]["max_epochs"]) * (num_train // batch_size)


def same_time_steps(budget_s: float, train_s: float, steps: int) -> int:
    """The steps a recipe that took ``train_s`` seconds (its whole ``fit``, start-up included) for
    ``steps`` steps trains in ``budget_s`` seconds (at least 2)."""
    return max(2, int(budget_s * steps / train_s))


def result_row(metrics: dict[str, Any], clock: StepClock, steps: int, train_s: float, eval_s: float,
               final_loss: Any) -> dict[str, Any]:
    """One ``results`` entry: COCO summary values, counts, throughput, times and the last loss."""
    if clock.steps != steps:
        raise RuntimeError(f"a recipe ran {clock.steps} steps, expected {steps}")
    row: dict[str, Any] = {key: float(metrics[key]) for key in RESULT_KEYS}
    row.update(num_images=int(metrics["num_images"]), num_detections=int(metrics["num_detections"]),
               per_class=metrics.get("per_class", {}))
    return {**row, **clock.summary(), "train_s": train_s, "eval_s": eval_s,
            "final_loss": None if final_loss is None else float(final_loss)}


def quickstart_recipe(module: Any, datamodule: Any, config: str, steps: int) -> dict[str, Any]:
    """The ``recipes.ours`` entry, read from the trained module's hyperparameters."""
    hp = module.hparams
    return {
        "name": Path(config).stem, "config": config, "model": hp.preset, "width_mult": float(hp.width_mult),
        "neck": hp.neck, "image_size": image_size_entry(datamodule.image_size), "augment": datamodule.augment,
        "optimizer": f"{hp.optimizer} (nesterov)" if hp.optimizer == "sgd" else hp.optimizer,
        "lr": float(hp.lr), "momentum": float(hp.momentum), "weight_decay": float(hp.weight_decay),
        "weight_decay_on": "conv weights only (not BatchNorm, not biases)",
        "warmup_steps": int(min(hp.warmup_steps, steps - 1)),
        "schedule": "linear warmup, then cosine to 0 at the last step", "ema_decay": hp.ema_decay,
        "channels_last": bool(hp.channels_last), "params": sum(p.numel() for p in module.model.parameters()),
    }


def image_size_entry(image_size: Any) -> int | list[int]:
    """A report's ``image_size``: an int when square and given as one, else ``[H, W]``."""
    return int(image_size) if isinstance(image_size, int) else list(input_hw(image_size))


def train_quickstart(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """``args.config`` (the quickstart's by default) through the project's CLI for ``args.steps`` steps,
    then validated."""
    overrides = {
        "data.train_images": args.train_images, "data.train_annotations": args.train_annotations,
        "data.val_images": args.val_images, "data.val_annotations": args.val_annotations,
        "data.batch_size": args.batch_size, "data.num_workers": args.num_workers, "data.image_size": args.image_size,
        "trainer.max_steps": args.steps,
        "trainer.max_epochs": -1,  # the step budget alone ends the run, whatever the batch size
        "trainer.check_val_every_n_epoch": 10**9,  # validated once, below
        "trainer.default_root_dir": run_dir, "model.width_mult": args.width_mult,
    }
    cli_args = ["--config", str(args.config)] + [f"--{k}={v}" for k, v in overrides.items() if v is not None]
    # LightningCLI warns when sys.argv carries arguments besides ``args``: this tool's own flags do.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = train_cli(cli_args, run=False)
    finally:
        sys.argv = argv
    trainer, module, datamodule = cli.trainer, cli.model, cli.datamodule
    clock = StepClock(args.skip_steps)
    trainer.callbacks.append(StepClockCallback(clock))
    train_s = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    train_s = time.perf_counter() - train_s
    final_loss = trainer.callback_metrics.get("train/loss")  # read before validate() replaces it
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(checkpoint)  # with validation off, Lightning kept no final state
    eval_s = time.perf_counter()
    trainer.validate(module, datamodule=datamodule, verbose=False)
    eval_s = time.perf_counter() - eval_s
    recipe = quickstart_recipe(module, datamodule, os.path.relpath(args.config, ROOT), args.steps)
    result = result_row(module.evaluator.last_run.metrics, clock, args.steps, train_s, eval_s, final_loss)
    return {"recipe": {**recipe, "run_dir": str(run_dir), "checkpoint": str(checkpoint)}, "result": result}


def train_torchvision(args: argparse.Namespace, label_map: LabelMap, run_dir: Path, seed: int,
                      steps: int) -> dict[str, Any]:
    """torchvision's reference recipe for ``steps`` steps from scratch, then validated."""
    loaders = [reference.reference_loader(images, annotations, label_map, train=train, batch_size=args.batch_size,
                                          num_workers=args.num_workers, seed=seed)
               for images, annotations, train in ((args.train_images, args.train_annotations, True),
                                                  (args.val_images, args.val_annotations, False))]
    if len(loaders[0]) == 0:
        raise SystemExit(f"{len(loaders[0].dataset)} training images make no batch of {args.batch_size}")
    lr = args.torchvision_lr if args.torchvision_lr is not None else reference.reference_lr(args.batch_size)
    # The reference's warmup covers at most 1000 steps of the first epoch.
    warmup = min(reference.MAX_WARMUP_STEPS, len(loaders[0]) - 1, steps - 1)
    torch.manual_seed(seed)
    module = TorchvisionSSDLite(label_map.to_dict(), total_steps=steps, lr=lr, warmup_steps=warmup,
                                image_size=args.torchvision_image_size)
    clock = StepClock(args.skip_steps)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                      num_sanity_val_steps=0, callbacks=[StepClockCallback(clock)], default_root_dir=run_dir)
    train_s = time.perf_counter()
    trainer.fit(module, train_dataloaders=loaders[0])
    train_s = time.perf_counter() - train_s
    final_loss = trainer.callback_metrics.get("train/loss")
    weights = run_dir / "last.pt"
    atomic_save({"state_dict": module.model.state_dict(), "label_map": label_map.to_dict()}, weights)
    eval_s = time.perf_counter()
    trainer.validate(module, dataloaders=loaders[1], verbose=False)
    eval_s = time.perf_counter() - eval_s
    lr_rule = ("--torchvision-lr" if args.torchvision_lr is not None else
               f"{reference.REFERENCE_LR} x batch / {reference.REFERENCE_BATCH} (linear scaling of the reference)")
    recipe = {**module.recipe(), "lr_rule": lr_rule, "run_dir": str(run_dir), "checkpoint": str(weights)}
    recipe["steps"] = steps
    return {"recipe": recipe, "result": result_row(module.metrics, clock, steps, train_s, eval_s, final_loss)}


def yolo_image_size(image_size: Any) -> int:
    """Ultralytics' ``imgsz`` for our input: the size when square, else the long side (it trains square
    inputs and letterboxes the image into them)."""
    return int(image_size) if isinstance(image_size, int) else max(input_hw(image_size))


def yolo_command(args: argparse.Namespace, setting: str, run_dir: Path, image_size: int, seed: int) -> list[str]:
    """``benchmarks/yolo_reference.py`` with the Ultralytics environment's python, at our budget."""
    return [str(args.yolo_python), str(YOLO_TOOL),
            "--train-images", str(args.train_images), "--train-annotations", str(args.train_annotations),
            "--val-images", str(args.val_images), "--val-annotations", str(args.val_annotations),
            "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--image-size", str(image_size),
            "--settings", setting, "--seed", str(seed), "--threads", str(args.threads),
            "--output-dir", str(run_dir), "--detections-out", str(run_dir / "detections.json")]


def eval_command(detections: Path, annotations: Path, metrics: Path) -> list[str]:
    """``tools/eval.py --detections`` in this environment: pycocotools, as for the other recipes."""
    return [sys.executable, str(ROOT / "tools" / "eval.py"), "--detections", str(detections),
            "--annotations", str(annotations), "--output", str(metrics)]


def yolo_entry(summary: dict[str, Any], metrics: dict[str, Any], skip_steps: int, eval_s: float,
               run_dir: Path) -> dict[str, Any]:
    """The ``recipes``/``results`` entry of a YOLO11n run from its ``summary.json`` and the metrics of
    its detections; its steps are the batches it trained (the budget in images is what matched)."""
    clock = StepClock(skip_steps)
    clock.stamps, clock.images = [float(t) for t in summary["step_stamps"]], [int(n) for n in summary["step_images"]]
    result = result_row(metrics, clock, int(summary["steps"]), float(summary["train_s"]), eval_s,
                        summary["final_loss"])
    recipe = {
        "name": f"yolo11n_{summary['settings']}", "model": f"yolo11n (ultralytics {summary['ultralytics']})",
        "settings": summary["settings"], "image_size": int(summary["image_size"]), "params": int(summary["params"]),
        "gflops": summary.get("gflops"), "gmacs": summary.get("gmacs"),
        "epochs": summary["epochs"], "batches_per_epoch": summary["batches_per_epoch"],
        "requested_steps": summary["requested_steps"], "steps": summary["steps"],
        "images_seen": summary["images_seen"], "target_images": summary["target_images"],
        "optimizer_steps": summary["optimizer_steps"], "train_args": summary["train_args"],
        "effective": summary["effective"], "predict": summary["predict"],
        "ultralytics_val": summary.get("ultralytics_val", {}), "torch": summary.get("torch"),
        "run_dir": str(run_dir), "checkpoint": summary["weights"], "detections": summary["detections"],
    }
    return {"recipe": recipe, "result": result}


def train_yolo(args: argparse.Namespace, setting: str, run_dir: Path, image_size: int, seed: int) -> dict[str, Any]:
    """YOLO11n in the Ultralytics environment (a subprocess), then its detections scored here."""
    command = yolo_command(args, setting, run_dir, image_size, seed)
    print(f"\nyolo11n_{setting}: {' '.join(command)}", flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    metrics_path = run_dir / "metrics.json"
    score_s = time.perf_counter()
    scored = subprocess.run(eval_command(Path(summary["detections"]), args.val_annotations, metrics_path),
                            check=False, cwd=ROOT, capture_output=True, text=True)
    score_s = time.perf_counter() - score_s
    if scored.returncode != 0:
        raise SystemExit(f"tools/eval.py failed on {summary['detections']}:\n"
                         f"{scored.stdout[-2000:]}{scored.stderr[-2000:]}")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    # eval_s: its prediction over the val images plus the pycocotools scoring (ours: trainer.validate).
    return yolo_entry(summary, metrics, args.skip_steps, float(summary["predict_s"]) + score_s, run_dir)


def check_yolo_python(python: Path) -> None:
    """Fail before the long runs when the Ultralytics environment is missing."""
    if not python.is_file():
        raise SystemExit(f"--yolo-python {python} not found; create it with `make yolo-env`")
    # Looked up, not imported: importing Ultralytics writes its settings file into the home folder.
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('ultralytics') is None)"
    probe = subprocess.run([str(python), "-c", code], check=False, capture_output=True)
    if probe.returncode != 0:
        raise SystemExit(f"--yolo-python {python} has no ultralytics; create it with `make yolo-env`")


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per recipe: input size, parameters, AP, AP50, AP75, images/s."""
    header = (f"{'recipe':<52} {'input':>7} {'params':>8} {'steps':>6} {'AP':>6} {'AP50':>6} {'AP75':>6} "
              f"{'img/s':>7} {'train s':>8}")
    lines = [header, "-" * len(header)]
    for name, entry in results.items():
        recipe, row = entry["recipe"], entry["result"]
        size = recipe["image_size"]
        size = str(size) if isinstance(size, int) else "x".join(str(v) for v in size)
        lines.append(f"{name + ': ' + recipe['model']:<52} {size:>7} {recipe['params'] / 1e6:>7.2f}M {row['steps']:>6d} "
                     f"{row['AP']:>6.3f} {row['AP50']:>6.3f} {row['AP75']:>6.3f} {row['images_per_s']:>7.2f} "
                     f"{row['train_s']:>8.0f}")
    classes = sorted({c for entry in results.values() for c in entry["result"]["per_class"]})
    if classes:
        lines += ["", "AP per class: " + ", ".join(classes)]
        for name, entry in results.items():
            per_class = entry["result"]["per_class"]
            lines.append(f"  {name:<24} " + " ".join(f"{per_class.get(c, {}).get('AP', float('nan')):>6.3f}"
                                                     for c in classes))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic",
                        help="synthetic set: DIR/{train,val}/ and DIR/{train,val}.json (tools/make_synthetic.py)")
    for split in ("train", "val"):
        parser.add_argument(f"--{split}-images", type=Path, default=None,
                            help=f"{split} image folder (default: DATA/{split}); --val-* is what both are scored on")
        parser.add_argument(f"--{split}-annotations", type=Path, default=None,
                            help=f"{split} COCO JSON (default: DATA/{split}.json)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml",
                        help="our recipe (a tools/train.py config; its data paths are replaced by the ones above)")
    parser.add_argument("--torchvision-image-size", type=int, nargs="+", default=[reference.IMAGE_SIZE],
                        metavar="SIZE", help="torchvision's input: S (square, default its own 320) or H W")
    parser.add_argument("--same-wall-clock", action="store_true",
                        help="also train torchvision's recipe for the steps it does in our training time")
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
    parser.add_argument("--yolo-python", type=Path, default=None,
                        help="python of the Ultralytics environment (`make yolo-env`: .venv-yolo/bin/python): also "
                             "train YOLO11n (benchmarks/yolo_reference.py) into OUTPUT_DIR/yolo11n_SETTINGS/")
    parser.add_argument("--yolo-settings", action="append", choices=YOLO_SETTINGS, default=None,
                        help="YOLO11n with Ultralytics' default settings and/or adapted to the budget (warmup 1 "
                             "epoch, nbs = batch); repeatable (default: both)")
    # For quick runs (tests) only: they change our recipe, so published figures never use them.
    parser.add_argument("--width-mult", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--num-workers", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.yolo_python is None:
        if args.yolo_settings:
            parser.error("--yolo-settings needs --yolo-python")
    else:
        # Absolute but not resolved: a venv's python is a link, and resolving it would leave the venv.
        args.yolo_python = Path(os.path.abspath(args.yolo_python))
        args.yolo_settings = list(dict.fromkeys(args.yolo_settings or YOLO_SETTINGS))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data = args.data.resolve()
    # The --data folder is reported only when it provided any of the four paths.
    args.data_used = any(getattr(args, f"{split}_{kind}") is None for split in ("train", "val")
                         for kind in ("images", "annotations"))
    for split in ("train", "val"):
        for kind, default in (("images", args.data / split), ("annotations", args.data / f"{split}.json")):
            key = f"{split}_{kind}"
            setattr(args, key, (getattr(args, key) or default).resolve())
            if not getattr(args, key).exists():
                hint = f": make the set with tools/make_synthetic.py --output {args.data}" if getattr(
                    args, key) == default.resolve() else ""
                raise SystemExit(f"--{split}-{kind}: {getattr(args, key)} not found{hint}")
    if len(args.torchvision_image_size) not in (1, 2):
        raise SystemExit(f"--torchvision-image-size takes S or H W, got {args.torchvision_image_size}")
    args.torchvision_image_size = (args.torchvision_image_size[0] if len(args.torchvision_image_size) == 1
                                   else tuple(args.torchvision_image_size))
    config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    args.batch_size = args.batch_size or int(config["data"]["batch_size"])
    if args.num_workers is None:
        args.num_workers = int(config["data"].get("num_workers", 0))
    train_coco = load_coco_json(args.train_annotations)
    num_train, num_val = len(train_coco["images"]), len(load_coco_json(args.val_annotations)["images"])
    args.steps = args.steps or quickstart_steps(config, num_train, args.batch_size)
    if args.steps < 2:
        raise SystemExit(f"--steps must be at least 2 (got {args.steps})")
    if args.yolo_python is not None:
        check_yolo_python(args.yolo_python)
    torch.set_num_threads(args.threads)
    seed = int(config.get("seed_everything", 0))
    label_map = LabelMap.from_categories(train_coco["categories"])
    output = args.output_dir.resolve()
    print(f"{num_train} train / {num_val} val images, {label_map.num_classes - 1} classes; "
          f"{args.steps} steps of {args.batch_size} images each; {args.threads} threads")

    results = {"ours": train_quickstart(args, output / args.config.stem),
               "torchvision": train_torchvision(args, label_map, output / "torchvision", seed, args.steps)}
    if args.same_wall_clock:
        ours_s, tv = results["ours"]["result"], results["torchvision"]["result"]
        steps = same_time_steps(ours_s["train_s"], tv["train_s"], tv["steps"])
        print(f"same wall-clock: torchvision trains {steps} steps in our {ours_s['train_s']:.0f} s")
        results["torchvision_same_time"] = train_torchvision(args, label_map, output / "torchvision_same_time",
                                                             seed, steps)
    if args.yolo_python is not None:
        yolo_size = yolo_image_size(args.image_size or config["data"]["image_size"])
        for setting in args.yolo_settings:
            results[f"yolo11n_{setting}"] = train_yolo(args, setting, output / f"yolo11n_{setting}", yolo_size, seed)
    command = " ".join([Path(sys.argv[0]).name if argv is None else "training_budget.py",
                        *(sys.argv[1:] if argv is None else argv)])
    settings = {"data": str(args.data) if args.data_used else None, "train_annotations": str(args.train_annotations),
                "val_annotations": str(args.val_annotations), "train_images": num_train, "val_images": num_val,
                "num_classes": label_map.num_classes, "steps": args.steps, "batch_size": args.batch_size,
                "threads": args.threads, "num_workers": args.num_workers, "skip_steps": args.skip_steps,
                "seed": seed, "eval_backend": "pycocotools"}
    if args.yolo_python is not None:
        settings["yolo"] = {"python": str(args.yolo_python), "settings": args.yolo_settings, "image_size": yolo_size}
    ours, tv = results["ours"]["result"], results["torchvision"]["result"]
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
        "machine": {"cores": os.cpu_count() or 0, "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "torchvision": torchvision.__version__, "lightning": lightning.__version__},
        "settings": settings,
        "recipes": {name: entry["recipe"] for name, entry in results.items()},
        "results": {name: entry["result"] for name, entry in results.items()},
        "ap_difference": ours["AP"] - tv["AP"],
        "throughput_ratio": ours["images_per_s"] / tv["images_per_s"],
    }
    print("\n" + format_table(results))
    print(f"\nsame budget: {args.steps} steps x {args.batch_size} images; val mAP@[.5:.95] ours - torchvision = "
          f"{report['ap_difference']:+.3f}; training throughput ours / torchvision = {report['throughput_ratio']:.2f}x")
    for name, entry in results.items():
        if name.startswith("yolo11n_"):
            recipe = entry["recipe"]
            print(f"{name}: {recipe['steps']} batches = {recipe['images_seen']} images seen (budget "
                  f"{recipe['target_images']}), {recipe['optimizer_steps']} optimizer steps, {recipe['epochs']} "
                  f"epoch(s) of {recipe['batches_per_epoch']} batches; imgsz {recipe['image_size']}")
    text = json.dumps(report, indent=2, default=float) + "\n"
    written = [output / "results.json"]
    if args.json is not None and args.json.resolve() != written[0]:
        written.append(args.json)
    for path in written:
        atomic_write_text(path, text)
    print("\nwrote:")
    print(f"  our run (Lightning logs, config, checkpoints/last.ckpt): {results['ours']['recipe']['run_dir']}")
    for name in results.keys() - {"ours"}:
        print(f"  {name}'s final weights: {results[name]['recipe']['checkpoint']}")
    for path in written:
        print(f"  results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
