"""Two CPU processes under DDP (gloo): training runs, and validation equals one process exactly."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from training_helpers import tiny_args

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "tools" / "train.py"


def run_cli(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(TRAIN), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def validation_metrics(run_dir: Path) -> dict[str, float]:
    (metrics_file,) = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    with open(metrics_file) as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val/mAP")]
    assert len(rows) == 1
    return {k: float(v) for k, v in rows[0].items() if k.startswith("val/mAP")}


def test_ddp_trains_and_validates_like_one_process(tiny_coco: Path, tmp_path: Path) -> None:
    ddp = {"trainer.strategy": "ddp", "trainer.devices": 2, "trainer.limit_val_batches": 0,
           "trainer.max_epochs": 1, "data.batch_size": 2, "model.lr": 0.05}
    run_cli(["fit", *tiny_args(tiny_coco, tmp_path / "train", **ddp)], tmp_path)
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()

    # 5 val images in batches of 2 over 2 ranks: the sampler pads the last batch with a repeat.
    common = {"data.batch_size": 2, "trainer.max_epochs": None}
    run_cli(["validate", *tiny_args(tiny_coco, tmp_path / "one", **common), f"--ckpt_path={checkpoint}"], tmp_path)
    run_cli(["validate", *tiny_args(tiny_coco, tmp_path / "two", **common, **{"trainer.strategy": "ddp",
             "trainer.devices": 2}), f"--ckpt_path={checkpoint}"], tmp_path)
    one, two = validation_metrics(tmp_path / "one"), validation_metrics(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 6
    assert one == two
