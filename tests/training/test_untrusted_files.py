"""Every training entry point that loads a file from elsewhere refuses a pickle that would run code,
with an error naming the file, and without running any of it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector.pretrain import load_classifier
from detector.pretrain.cli import main as classifier_main
from detector.training.callbacks import AtomicCheckpointIO
from detector.training.cli import main

from training_helpers import tiny_args


@pytest.fixture
def hostile(tmp_path: Path, code_payload) -> tuple[Path, Path]:
    """``(file, marker)``: a checkpoint-shaped file whose unpickling would create ``marker``."""
    marker, path = code_payload.marker, tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {"model.features.0.0.weight": code_payload}, "detector": {}, "classifier": {}},
               path)
    torch.load(path, weights_only=False)  # the payload is live: loaded unsafely, it runs
    assert marker.is_file()
    marker.unlink()
    return path, marker


def test_pretrained_backbone_refuses_a_code_pickle(tiny_coco: Path, tmp_path: Path, hostile) -> None:
    path, marker = hostile
    with pytest.raises(ValueError, match=r"pretrained_backbone .*hostile\.ckpt.*refuses to run"):
        main(tiny_args(tiny_coco, tmp_path / "run", **{"model.pretrained_backbone": path}), run=False)
    assert not marker.exists()


def test_init_checkpoint_refuses_a_code_pickle(tiny_coco: Path, tmp_path: Path, hostile) -> None:
    path, marker = hostile
    with pytest.raises(ValueError, match=r"hostile\.ckpt.*refuses to run"):
        main(tiny_args(tiny_coco, tmp_path / "run", **{"model.init_checkpoint": path}), run=False)
    assert not marker.exists()


def test_resume_refuses_a_code_pickle(tiny_coco: Path, tmp_path: Path, hostile) -> None:
    path, marker = hostile
    with pytest.raises(ValueError, match=r"hostile\.ckpt.*refuses to run"):
        main(["fit", *tiny_args(tiny_coco, tmp_path / "run"), f"--ckpt_path={path}"])
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # no step was trained
    with pytest.raises(ValueError, match=r"hostile\.ckpt.*refuses to run"):  # Trainer.fit(ckpt_path=...) too
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


def test_classifier_checkpoint_and_pretrained_refuse_a_code_pickle(tmp_path: Path, hostile) -> None:
    path, marker = hostile
    with pytest.raises(ValueError, match=r"hostile\.ckpt.*refuses to run"):
        load_classifier(path)
    train = tmp_path / "train"
    for name in ("red", "blue"):
        (train / name).mkdir(parents=True)
        (train / name / "0.png").write_bytes(b"")  # never read: the model fails first
    with pytest.raises(ValueError, match=r"hostile\.ckpt.*refuses to run"):
        classifier_main([f"--data.train_dir={train}", f"--model.pretrained={path}", "--trainer.accelerator=cpu",
                         f"--trainer.default_root_dir={tmp_path / 'run'}"], run=False)
    assert not marker.exists()
