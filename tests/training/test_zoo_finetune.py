"""Fine-tuning from a zoo model: `--model.init_checkpoint zoo:NAME` with the zoo model's preset keeps the
backbone, extra layers and box heads, re-initialises the class heads, and the data is normalised as
the preset says. The zoo file is one made here (torchvision's architecture, random weights)."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

import detector.zoo.registry as registry
from detector.labels import LabelMap
from detector.training.cli import main
from detector.training.module import DetectorModule
from detector.zoo import zoo_models
from detector.zoo.equivalence import randomise
from detector.zoo.torchvision_ssdlite import convert_state_dict

NAME = "ssdlite320_mobilenet_v3_large_coco"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def published_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """A torchvision SSDLite file served by a file:// URL as the zoo entry; returns its converted weights."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    state = randomise(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)).state_dict()
    upload = tmp_path / "upload.pth"
    torch.save(state, upload)
    prefix = hashlib.sha256(upload.read_bytes()).hexdigest()[:8]
    served = upload.rename(tmp_path / f"ssdlite-{prefix}.pth")
    entry = dataclasses.replace(zoo_models()[NAME], url=served.as_uri(), sha256_prefix=prefix)
    monkeypatch.setattr(registry, "_zoo", lambda: {NAME: entry})
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return convert_state_dict(state)


def test_init_checkpoint_from_the_zoo_keeps_all_but_the_class_heads(published_zoo: dict[str, torch.Tensor]) -> None:
    labels = LabelMap(category_ids=(1, 2, 3), names=("car", "bike", "sign"))
    module = DetectorModule(preset="ssdlite320_mobilenet_v3_large", init_checkpoint=f"zoo:{NAME}",
                            label_map=labels.to_dict(), image_size=320)
    ours = module.model.state_dict()
    kept = [k for k in ours if not k.startswith("head.cls_heads.")]
    assert all(torch.equal(ours[k], published_zoo[k]) for k in kept)
    # The class heads' last convs have another shape (4 classes, not 91): re-initialised, not loaded.
    assert ours["head.cls_heads.0.1.weight"].shape[0] == 6 * 4 != published_zoo["head.cls_heads.0.1.weight"].shape[0]
    # Their depthwise part has the same shape and is kept (only the class count changed).
    assert torch.equal(ours["head.cls_heads.0.0.0.weight"], published_zoo["head.cls_heads.0.0.0.weight"])


def test_finetune_zoo_config_normalises_as_the_preset_says(tiny_coco: Path, tmp_path: Path) -> None:
    args = ["--config", str(REPO / "configs" / "finetune_zoo.yaml"),
            f"--data.train_images={tiny_coco / 'train'}", f"--data.train_annotations={tiny_coco / 'train.json'}",
            f"--data.val_images={tiny_coco / 'val'}", f"--data.val_annotations={tiny_coco / 'val.json'}",
            "--model.init_checkpoint=null", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}"]
    cli = main(args, run=False)
    assert cli.datamodule.mean == (0.5, 0.5, 0.5) and cli.datamodule.std == (0.5, 0.5, 0.5)
    assert cli.model.model.mean == (0.5, 0.5, 0.5)
    quickstart = main([*args[:1], str(REPO / "configs" / "quickstart.yaml"), *args[2:]], run=False)
    assert quickstart.datamodule.mean == pytest.approx((0.485, 0.456, 0.406))


def test_driving_pretrained_config_builds_tfs_network_from_the_person_model(tiny_coco: Path, tmp_path: Path) -> None:
    """configs/driving_carla_pretrained.yaml: TF's padding and [-1, 1] input from the preset, and the
    OpenCV resize recorded, since the training pipeline resizes with OpenCV (the preset's TF resize is
    for the converted TF graphs)."""
    args = ["--config", str(REPO / "configs" / "driving_carla_pretrained.yaml"),
            f"--data.train_images={tiny_coco / 'train'}", f"--data.train_annotations={tiny_coco / 'train.json'}",
            f"--data.val_images={tiny_coco / 'val'}", f"--data.val_annotations={tiny_coco / 'val.json'}",
            "--model.init_checkpoint=null", f"--trainer.default_root_dir={tmp_path}"]
    cli = main(args, run=False)
    config = cli.model.model.config
    assert config["preset"] == "ssdlite_mobilenet_v2_tf" and config["padding"] == "tf_same"
    assert config["resize"] == "opencv" and tuple(cli.model.model.image_size) == (224, 384)
    assert cli.datamodule.mean == (0.5, 0.5, 0.5)
    assert cli.model.hparams.init_checkpoint is None  # the config's zoo:ssdlite_mobilenet_v2_voc_person, overridden
    with open(REPO / "configs" / "driving_carla_pretrained.yaml") as handle:
        assert "init_checkpoint: zoo:ssdlite_mobilenet_v2_voc_person" in handle.read()
