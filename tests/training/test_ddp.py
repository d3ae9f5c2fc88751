"""Two CPU processes under DDP (gloo): training runs, and validation equals one process exactly, on
a trained model whose mAP is far from zero (so the comparison can fail)."""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from training_helpers import output_of, run_train, tiny_args


def validation_metrics(run_dir: Path) -> dict[str, float]:
    (metrics_file,) = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    with open(metrics_file) as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val/mAP")]
    assert len(rows) == 1
    return {k: float(v) for k, v in rows[0].items() if k.startswith("val/mAP")}


def test_ddp_trains(tiny_coco: Path, tmp_path: Path) -> None:
    # With an EMA and no validation inside the run (every 2 epochs, 1 run), the end-of-fit EMA / raw
    # comparison (issue #36) runs on both ranks, each on its shard of the validation set.
    ddp = {"trainer.strategy": "ddp", "trainer.devices": 2, "trainer.check_val_every_n_epoch": 2,
           "trainer.max_epochs": 1, "data.batch_size": 2, "model.lr": 0.05, "model.ema_decay": 0.9,
           "model.ema_warmup_steps": 2}
    done = run_train(["fit", *tiny_args(tiny_coco, tmp_path / "train", **ddp)], tmp_path)
    assert done.returncode == 0, output_of(done)
    last = torch.load(tmp_path / "train" / "checkpoints" / "last.ckpt", weights_only=True)
    choice = last["detector"]["weights"]
    assert choice["global_step"] == last["global_step"] == 3 and choice["use"] in ("ema", "model")


def test_ddp_validates_like_one_process(learned_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = learned_run
    checkpoint = run / "checkpoints" / "last.ckpt"
    # 25 val images in batches of 2 over 2 ranks: the sampler pads the last batch with a repeat.
    common = {"data.batch_size": 2, "data.image_size": 96, "trainer.max_epochs": None}
    for name, extra in (("one", {}), ("two", {"trainer.strategy": "ddp", "trainer.devices": 2})):
        done = run_train(["validate", *tiny_args(data, tmp_path / name, **common, **extra), f"--ckpt_path={checkpoint}"],
                         tmp_path)
        assert done.returncode == 0, output_of(done)
    one, two = validation_metrics(tmp_path / "one"), validation_metrics(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 6
    assert one["val/mAP"] > 0.01 and one["val/mAP50"] > 0.05  # a trained model: not 0 == 0 nor -1 == -1
    assert one == two
