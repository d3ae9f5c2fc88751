"""Training on an ImageFolder set: it learns, logs, checkpoints as data, validates; bad data is handled."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from classifier_helpers import COLOURS, make_colour_folder, tiny_args
from detector import LabelMap, build_model, save_checkpoint
from detector.pretrain import ClassifierPredictor, is_classifier_checkpoint, load_classifier
from detector.pretrain.cli import main
from detector.pretrain.data import ClassifierDataModule, ImageFolderDataset, classification_collate
from detector.pretrain.transforms import build_classifier_transforms


def val_images(root: Path) -> list[tuple[Path, str]]:
    return [(path, path.parent.name) for path in sorted(root.glob("*/*.png"))]


def test_fit_learns_colours_well_above_chance(trained_run: Path, colour_data: Path) -> None:
    checkpoints = trained_run / "checkpoints"
    assert (checkpoints / "best.ckpt").is_file() and (checkpoints / "last.ckpt").is_file()
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 48  # 8 epochs x 96 images / 16

    # Held-out images, classified independently of the training loop: chance is 0.25.
    predictor = ClassifierPredictor.from_checkpoint(checkpoints / "last.ckpt")
    samples = val_images(colour_data / "val")
    top = predictor.predict([path for path, _ in samples], k=1)
    accuracy = sum(t[0][0] == name for t, (_, name) in zip(top, samples)) / len(samples)
    assert accuracy >= 0.8, accuracy


def test_fit_logs_losses_and_top1_top5(trained_run: Path) -> None:
    (metrics_file,) = trained_run.glob("csv/version_*/metrics.csv")
    rows = list(csv.DictReader(metrics_file.open()))
    logged = {key for row in rows for key, value in row.items() if value}
    assert {"train/loss", "val/loss", "val/top1", "val/top5", "lr"} <= logged
    top1 = [float(r["val/top1"]) for r in rows if r.get("val/top1")]
    top5 = [float(r["val/top5"]) for r in rows if r.get("val/top5")]
    assert len(top1) == 8 and top1[-1] >= 0.8
    assert top5 == [1.0] * 8  # 4 classes: the true one is always in the top 5
    assert (metrics_file.parent / "config.yaml").is_file()  # the full config, beside the logs


def test_checkpoint_is_plain_data_with_class_names(trained_run: Path) -> None:
    path = trained_run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    meta = checkpoint["classifier"]
    assert meta["class_names"] == sorted(COLOURS)
    assert meta["image_size"] == 48
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["config"]["num_classes"] == 4 and meta["config"]["width_mult"] == 0.35
    assert meta["config"]["pretrained"] == "none"  # the weights are in the checkpoint itself
    assert checkpoint["state_dict"]["model.classifier.1.weight"].shape == (4, 1280)
    model, _ = load_classifier(path)
    assert not model.training


def test_is_classifier_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    assert is_classifier_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    detector = tmp_path / "detector.pt"
    save_checkpoint(detector, build_model(num_classes=3, width_mult=0.35, image_size=128), LabelMap((1, 2), ("a", "b")))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    assert not is_classifier_checkpoint(detector)
    assert not is_classifier_checkpoint(junk)
    assert not is_classifier_checkpoint(tmp_path / "missing.ckpt")


def test_validate_subcommand(trained_run: Path, colour_data: Path, tmp_path: Path) -> None:
    cli = main(["validate", *tiny_args(None, colour_data / "val", tmp_path / "validate"),
                f"--ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}"])
    metrics = cli.trainer.callback_metrics
    assert float(metrics["val/top1"]) >= 0.8 and float(metrics["val/top5"]) == 1.0


def test_unreadable_image_is_skipped_and_counted(tmp_path: Path) -> None:
    make_colour_folder(tmp_path, per_class=2, size=16, classes=("red", "blue"))
    (tmp_path / "red" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    dataset = ImageFolderDataset(tmp_path, transform=build_classifier_transforms(16, train=True))
    assert dataset.class_names == ["blue", "red"] and len(dataset) == 5
    broken = [i for i, (path, _) in enumerate(dataset.samples) if path.name == "broken.jpg"]
    with pytest.warns(UserWarning, match="broken.jpg"):
        items = [dataset[i] for i in range(len(dataset))]
    assert items[broken[0]] is None and len(dataset.unreadable) == 1
    images, labels = classification_collate(items)
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1]


def test_val_classes_follow_train_and_unknown_folders_fail(tmp_path: Path) -> None:
    make_colour_folder(tmp_path / "train", per_class=1, size=16, classes=("blue", "green", "red"))
    make_colour_folder(tmp_path / "val", per_class=1, size=16, classes=("red",))  # a subset is fine
    data = ClassifierDataModule(str(tmp_path / "train"), str(tmp_path / "val"), image_size=16)
    data.setup("validate")
    assert data.class_names == ["blue", "green", "red"] and data.val_dataset.samples[0][1] == 2
    make_colour_folder(tmp_path / "val", per_class=1, size=16, classes=("yellow",))
    with pytest.raises(ValueError, match="yellow"):
        ImageFolderDataset(tmp_path / "val", data.class_names)
