"""benchmarks/training_budget.py on a tiny synthetic set, 3 steps per recipe: the JSON's keys, types and
ranges (no timing assertions)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detector.data.synthetic import SyntheticConfig, make_synthetic
from detector.labels import LabelMap
from detector.training.reference import StepClock, TorchvisionSSDLite

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "benchmarks" / "training_budget.py"
STEPS, BATCH = 3, 4


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    """(the --json report, the output dir, stdout) of one tiny run."""
    root = tmp_path_factory.mktemp("bench_training")
    data = root / "data"
    make_synthetic(data, num_train=8, num_val=4, seed=1, config=SyntheticConfig(image_size=128, clutter=2))
    out, report = root / "out", root / "report" / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--data", str(data), "--steps", str(STEPS), "--batch-size", str(BATCH),
         "--threads", "1", "--skip-steps", "1", "--output-dir", str(out), "--json", str(report),
         # Hidden flags keeping our recipe tiny (torchvision's model is fixed at 320 px).
         "--width-mult", "0.35", "--image-size", "128", "--num-workers", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(report.read_text()), out, proc.stdout


def test_top_level_keys(run: tuple[dict, Path, str]) -> None:
    result, _, _ = run
    assert set(result) >= {"date", "command", "machine", "settings", "recipes", "results", "ap_difference",
                           "throughput_ratio"}
    assert set(result["recipes"]) == set(result["results"]) == {"ours", "torchvision"}
    settings = result["settings"]
    assert settings["steps"] == STEPS and settings["batch_size"] == BATCH
    assert settings["train_images"] == 8 and settings["val_images"] == 4
    assert settings["num_classes"] == 6  # five shapes + background, read from the annotations
    assert settings["eval_backend"] == "pycocotools"


def test_recipes(run: tuple[dict, Path, str]) -> None:
    recipes = run[0]["recipes"]
    ours, tv = recipes["ours"], recipes["torchvision"]
    assert ours["config"] == "configs/quickstart.yaml" and ours["image_size"] == 128 and ours["width_mult"] == 0.35
    assert tv["model"] == "ssdlite320_mobilenet_v3_large" and tv["image_size"] == 320
    assert tv["weights"] is None and tv["weights_backbone"] is None
    assert tv["lr"] == pytest.approx(0.15 * BATCH / 192)  # its recipe scaled linearly to the batch
    for recipe in (ours, tv):
        assert isinstance(recipe["params"], int) and recipe["params"] > 0
        assert isinstance(recipe["lr"], float) and recipe["lr"] > 0
        assert recipe["momentum"] == 0.9 and recipe["weight_decay"] == pytest.approx(4e-5)


def test_results(run: tuple[dict, Path, str]) -> None:
    result = run[0]
    for name, row in result["results"].items():
        for key in ("AP", "AP50", "AP75"):
            assert isinstance(row[key], float) and 0.0 <= row[key] <= 1.0, (name, key, row[key])
        assert isinstance(row["images_per_s"], float) and row["images_per_s"] > 0, name
        assert row["steps"] == STEPS
        assert row["skipped_steps"] == 1 and row["measured_steps"] == STEPS - 1
        assert row["measured_images"] == BATCH * (STEPS - 1)
        assert row["num_images"] == 4  # every val image scored
        assert isinstance(row["final_loss"], float)
    ours, tv = result["results"]["ours"], result["results"]["torchvision"]
    assert result["ap_difference"] == pytest.approx(ours["AP"] - tv["AP"])
    assert result["throughput_ratio"] == pytest.approx(ours["images_per_s"] / tv["images_per_s"])


def test_outputs(run: tuple[dict, Path, str]) -> None:
    result, out, stdout = run
    assert (out / "quickstart" / "checkpoints" / "last.ckpt").is_file()
    assert (out / "torchvision" / "last.pt").is_file()
    assert json.loads((out / "results.json").read_text())["results"] == result["results"]
    assert "img/s" in stdout and "wrote:" in stdout


def _tool_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_training", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_budget_and_clock_by_hand() -> None:
    # 1000 images in batches of 16 with drop_last: 62 steps an epoch, 28 epochs.
    assert _tool_module().quickstart_steps({"trainer": {"max_epochs": 28}}, 1000, 16) == 1736
    clock = StepClock(skip=2)
    clock.stamps, clock.images = [0.0, 1.0, 3.0, 7.0], [4, 4, 4, 2]
    summary = clock.summary()  # steps 3..4: 6 images from t=1 s (end of step 2) to t=7 s (end of step 4)
    assert summary["measured_images"] == 6 and summary["measured_s"] == pytest.approx(6.0)
    assert summary["images_per_s"] == pytest.approx(1.0)


def test_torchvision_optimiser_and_schedule_by_hand() -> None:
    label_map = LabelMap(category_ids=[1, 2], names=["a", "b"]).to_dict()
    module = TorchvisionSSDLite(label_map, total_steps=100, lr=0.1, warmup_steps=10)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    (group,) = optimizer.param_groups  # weight decay on every parameter, as the reference does
    assert len(group["params"]) == len(list(module.model.parameters()))
    assert group["weight_decay"] == pytest.approx(4e-5) and group["momentum"] == 0.9
    lrs = []
    for _ in range(101):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # The reference chains LinearLR and CosineAnnealingLR: warmup factor times cosine over all 100 steps.
    assert lrs[0] == pytest.approx(0.1 * 0.001)  # warmup starts at 0.001 of the peak
    assert lrs[5] == pytest.approx(0.1 * (0.001 + 0.999 * 0.5) * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert lrs[10] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.10)))  # warmup done, cosine already under 1
    assert lrs[50] == pytest.approx(0.1 * 0.5)  # halfway through the budget
    assert lrs[100] == pytest.approx(0.0)
    assert module.recipe()["lr"] == 0.1 and module.recipe()["image_size"] == 320
