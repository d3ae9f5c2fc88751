"""tools/train.py end to end: checkpoints, metrics, label map, fine-tuning, every config parses."""
from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import pytest
import torch

from detector import load_checkpoint
from detector.data.synthetic import SyntheticConfig, make_synthetic
from detector.training.cli import main

from training_helpers import tiny_args

REPO = Path(__file__).resolve().parents[2]


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    files = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    assert files, f"no metrics.csv under {run_dir}"
    with open(files[-1]) as handle:
        return list(csv.DictReader(handle))


def test_fit_writes_best_and_last_with_everything_to_rebuild(tiny_coco: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    main(["fit", *tiny_args(tiny_coco, run, **{"model.channels_last": True})])
    for name in ("best.ckpt", "last.ckpt"):
        path = run / "checkpoints" / name
        assert path.is_file()
        raw = torch.load(path, map_location="cpu", weights_only=True)  # data only, no code
        assert raw["detector"]["label_map"]["names"] == ["circle", "square", "triangle", "star", "cross"]
        assert raw["detector"]["config"]["image_size"] == [128, 128]
    model, label_map = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert model.num_classes == 6 and label_map.category_ids == (1, 2, 3, 4, 5)
    assert model.image_size == (128, 128) and model.config["width_mult"] == 0.35

    rows = read_metrics(run)
    logged = set().union(*(row.keys() for row in rows))
    for key in ("val/mAP", "val/mAP50", "val/mAP75", "val/mAP_small", "val/mAP_medium", "val/mAP_large",
                "train/loss", "train/loss_box", "train/loss_cls", "lr"):
        assert key in logged
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == sorted(steps) and len(steps) == 6  # 12 images / batch 4 x 2 epochs, every step


def test_label_map_and_classes_come_from_the_annotations(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_synthetic(data, num_train=4, num_val=2, seed=1, config=SyntheticConfig(image_size=96, clutter=0))
    cli = main(tiny_args(data, tmp_path / "run", **{"data.image_size": 96}), run=False)
    assert cli.model.model.num_classes == 6
    assert cli.model.label_map.names == ("circle", "square", "triangle", "star", "cross")
    assert cli.model.model.image_size == (96, 96)  # linked from --data.image_size


def test_init_checkpoint_loads_what_fits_and_reinitialises_class_heads(
    tiny_coco: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from detector import LabelMap, build_model, save_checkpoint

    other = build_model(num_classes=3, width_mult=0.35, image_size=128)  # 2 classes + background
    save_checkpoint(tmp_path / "other.ckpt", other, LabelMap((1, 2), ("a", "b")))
    with caplog.at_level(logging.INFO):
        cli = main(tiny_args(tiny_coco, tmp_path / "run", **{"model.init_checkpoint": tmp_path / "other.ckpt"}),
                   run=False)
    model = cli.model.model
    source = other.state_dict()
    for name, value in model.state_dict().items():
        if re.fullmatch(r"head\.cls_heads\.\d\.1\.(weight|bias)", name):
            assert value.shape != source[name].shape  # 6 classes here, 3 there: re-initialised
        else:
            torch.testing.assert_close(value, source[name], rtol=0, atol=0)
    assert "re-initialised 12" in caplog.text  # 6 levels x (weight, bias) of the class heads


def test_anchor_and_matching_options_reach_the_model_and_its_checkpoint(tiny_coco: Path, tmp_path: Path) -> None:
    from detector import save_checkpoint

    cli = main(tiny_args(tiny_coco, tmp_path / "run", **{"model.min_scale": 0.15, "model.max_scale": 0.9,
                                                         "model.reduce_boxes_in_lowest_layer": False,
                                                         "model.iou_threshold": 0.3}), run=False)
    model = cli.model.model
    assert model.criterion.matcher.iou_threshold == 0.3
    # Six boxes at every location of every level (5 ratios + the interpolated square), none reduced.
    assert model.anchor_generator.num_anchors_per_location() == [6] * 6
    assert model.anchors.shape[0] == 6 * sum(h * w for h, w in model.feature_sizes)
    # The first box of a level-0 location: scale 0.15, ratio 1, centred on the first cell, 128 px image.
    cell = 128 / model.feature_sizes[0][1]
    side = 0.15 * 128
    expected = torch.tensor([cell / 2 - side / 2, cell / 2 - side / 2, cell / 2 + side / 2, cell / 2 + side / 2])
    torch.testing.assert_close(model.anchors[0], expected)
    save_checkpoint(tmp_path / "m.ckpt", model, cli.model.label_map)
    rebuilt, _ = load_checkpoint(tmp_path / "m.ckpt")
    torch.testing.assert_close(rebuilt.anchors, model.anchors, rtol=0, atol=0)
    assert rebuilt.criterion.matcher.iou_threshold == 0.3


def test_explicit_anchor_scales_reach_the_stride8_level_and_the_checkpoint(tiny_coco: Path, tmp_path: Path) -> None:
    from detector import save_checkpoint

    # Seven levels with stride8_level: eight scales, the stride-8 level's own small one first.
    scales = [0.04, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0]
    cli = main(tiny_args(tiny_coco, tmp_path / "run", **{"model.stride8_level": True,
                                                         "model.reduce_boxes_in_lowest_layer": False,
                                                         "model.anchor_scales": str(scales)}), run=False)
    model = cli.model.model
    assert len(model.feature_sizes) == 7
    # The first box of each level is the square of that level's scale on its first cell (128 px image).
    start = 0
    for level, ((height, width), scale) in enumerate(zip(model.feature_sizes, scales)):
        cell, side = 128 / width, scale * 128
        expected = torch.tensor([cell / 2 - side / 2, cell / 2 - side / 2, cell / 2 + side / 2, cell / 2 + side / 2])
        torch.testing.assert_close(model.anchors[start], expected, msg=f"level {level}")
        start += 6 * height * width
    assert start == model.anchors.shape[0]
    save_checkpoint(tmp_path / "m.ckpt", model, cli.model.label_map)
    rebuilt, _ = load_checkpoint(tmp_path / "m.ckpt")
    torch.testing.assert_close(rebuilt.anchors, model.anchors, rtol=0, atol=0)
    # Six scales for seven levels: refused, naming the option.
    with pytest.raises(ValueError, match="scales: one per level"):
        main(tiny_args(tiny_coco, tmp_path / "bad", **{"model.stride8_level": True,
                                                       "model.anchor_scales": str(scales[1:])}), run=False)


DETECTION_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("classifier_"))


def test_every_config_is_covered() -> None:
    classifier = sorted((REPO / "configs").glob("classifier_*.yaml"))
    assert len(DETECTION_CONFIGS) >= 4 and classifier  # the classifier ones: test_classifier_config_parses
    assert sorted(DETECTION_CONFIGS + classifier) == sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", sorted(DETECTION_CONFIGS), ids=lambda p: p.name)
def test_every_config_parses(config: Path, tiny_coco: Path, tmp_path: Path) -> None:
    import yaml

    expected = yaml.safe_load(config.read_text())
    # Point the data at the tiny set and keep this machine's CPU; everything else comes from the file.
    args = ["--config", str(config),
            f"--data.train_images={tiny_coco / 'train'}", f"--data.train_annotations={tiny_coco / 'train.json'}",
            f"--data.val_images={tiny_coco / 'val'}", f"--data.val_annotations={tiny_coco / 'val.json'}",
            "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
            "--trainer.precision=32-true", "--trainer.sync_batchnorm=false",
            "--model.pretrained_backbone=none", "--model.init_checkpoint=null",  # nothing to download here
            f"--trainer.default_root_dir={tmp_path}"]
    cli = main(args, run=False)
    for key, value in expected["model"].items():
        if key not in ("pretrained_backbone", "init_checkpoint"):
            assert cli.model.hparams[key] == value, key
    for key in ("batch_size", "image_size", "augment"):
        assert getattr(cli.datamodule, key) == expected["data"][key]
    assert cli.trainer.max_epochs == expected["trainer"].get("max_epochs", cli.trainer.max_epochs)


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("classifier_*.yaml")), ids=lambda p: p.name)
def test_classifier_config_parses(config: Path, tmp_path: Path) -> None:
    import yaml
    from PIL import Image

    from detector.pretrain.cli import main as classifier_main

    for split in ("train", "val"):
        for name in ("red", "blue"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32), name).save(tmp_path / split / name / "0.png")
    expected = yaml.safe_load(config.read_text())
    cli = classifier_main(["--config", str(config), f"--data.train_dir={tmp_path / 'train'}",
                           f"--data.val_dir={tmp_path / 'val'}", "--trainer.accelerator=cpu", "--trainer.devices=1",
                           "--trainer.strategy=auto", "--trainer.precision=32-true", "--trainer.sync_batchnorm=false",
                           "--model.pretrained=none", f"--trainer.default_root_dir={tmp_path}"], run=False)
    for key, value in expected["model"].items():
        if key != "pretrained":
            assert cli.model.hparams[key] == value, key
    assert cli.datamodule.batch_size == expected["data"]["batch_size"]
