"""Keeping a teacher's class while other classes learn (detector.training.distillation, issue #38): the
label loss leaves the kept class alone, the student starts as the teacher, the distillation terms by
hand, and a CLI fit that records the class and keeps the BatchNorm statistics."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from detector.checkpoint import read_checkpoint, save_checkpoint
from detector.labels import LabelMap
from detector.modeling.ssdlite import build_model
from detector.training.cli import main
from detector.training.module import DetectorModule

from training_helpers import tiny_args

SIZE = 96


def teacher_file(path: Path, name: str = "person") -> Path:
    """A tiny sigmoid-scored one-class detector; some anchors sure of its class (so boxes distil too)."""
    torch.manual_seed(0)
    model = build_model("ssdlite_mobilenetv2", num_classes=2, width_mult=0.35, image_size=SIZE, classification="focal")
    with torch.no_grad():
        model.head.cls_heads[1][-1].bias.view(-1, 2)[:, 1] = 3.0  # level 2: confident everywhere
    save_checkpoint(path, model.eval(), LabelMap((7,), (name,)))
    return path


def student(teacher: Path, **options: object) -> DetectorModule:
    return DetectorModule(preset="ssdlite_mobilenetv2", width_mult=0.35, image_size=SIZE, classification="focal",
                          label_map={"category_ids": [1, 2], "names": ["car", "bus"]}, init_checkpoint=str(teacher),
                          teacher_checkpoint=str(teacher), **options)


def test_unlabelled_classes_get_no_label_loss() -> None:
    model = build_model("ssdlite_mobilenetv2", num_classes=4, width_mult=0.35, image_size=SIZE, classification="focal")
    torch.manual_seed(1)
    logits = torch.randn(2, model.anchors.shape[0], 4, requires_grad=True)
    boxes = torch.randn(2, model.anchors.shape[0], 4)
    targets = [{"boxes": torch.tensor([[10.0, 10, 50, 60]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[30.0, 20, 90, 70]]), "labels": torch.tensor([2])}]
    kept = model.criterion(logits, boxes, model.anchors, targets, unlabelled_classes=[3])
    # The same loss as a model without class 3 at all.
    without = model.criterion(logits[..., :3], boxes, model.anchors, targets)
    assert torch.allclose(kept["loss_cls"], without["loss_cls"]) and torch.equal(kept["loss_box"], without["loss_box"])
    kept["loss"].backward()
    assert logits.grad[..., 3].abs().max() == 0 and logits.grad[..., 1:3].abs().max() > 0
    softmax = build_model("ssdlite_mobilenetv2", num_classes=4, width_mult=0.35, image_size=SIZE)
    with pytest.raises(ValueError, match="sigmoid"):
        softmax.criterion(logits, boxes, softmax.anchors, targets, unlabelled_classes=[3])


def test_the_student_starts_as_the_teacher_and_the_terms_by_hand(tmp_path: Path) -> None:
    module = student(teacher_file(tmp_path / "teacher.ckpt"))
    assert module.label_map == LabelMap((1, 2, 3), ("car", "bus", "person"))  # appended after the data's ids
    distillation = module.distillation
    assert distillation.student_columns == [3] and distillation.teacher_columns == [1]
    images = torch.randn(2, 3, SIZE, SIZE)
    model = module.model.eval()
    logits, boxes = model(images)
    teacher_logits, teacher_boxes = distillation.teacher(images)
    assert torch.equal(logits[..., 3], teacher_logits[..., 1]) and torch.equal(boxes, teacher_boxes)
    zero = distillation.loss(images, logits, boxes)
    assert zero["loss_distill_cls"] == 0 and zero["loss_distill_box"] == 0

    # Moved off the teacher: GFL's quality focal loss to the teacher's scores, and smooth-L1 on the
    # boxes of the anchors the teacher is sure of, weighted by its score; both over the number of those.
    shifted_logits, shifted_boxes = logits.detach() + 0.5, boxes.detach() + 0.25
    terms = distillation.loss(images, shifted_logits, shifted_boxes)
    q = teacher_logits[..., 1].sigmoid()
    p = shifted_logits[..., 3].sigmoid()
    sure = q >= 0.5
    assert 0 < int(sure.sum()) < q.numel()
    n = int(sure.sum())
    expected_cls = ((q - p).abs() ** 2 * F.binary_cross_entropy_with_logits(shifted_logits[..., 3], q, reduction="none")).sum() / n
    expected_box = (F.smooth_l1_loss(shifted_boxes[sure], teacher_boxes[sure], reduction="none").sum(-1) * q[sure]).sum() / n
    assert torch.allclose(terms["loss_distill_cls"], expected_cls) and torch.allclose(terms["loss_distill_box"], expected_box)


def test_teacher_and_student_must_share_anchors_and_sigmoid_scores(tmp_path: Path) -> None:
    teacher = teacher_file(tmp_path / "teacher.ckpt")
    with pytest.raises(ValueError, match="different anchors"):
        student(teacher, min_scale=0.1)
    with pytest.raises(ValueError, match="sigmoid"):
        DetectorModule(preset="ssdlite_mobilenetv2", width_mult=0.35, image_size=SIZE, classification="softmax",
                       label_map={"category_ids": [1], "names": ["car"]}, teacher_checkpoint=str(teacher))


def test_a_fit_keeps_the_class_and_the_batchnorm_statistics(tiny_coco: Path, tmp_path: Path) -> None:
    teacher = teacher_file(tmp_path / "teacher.ckpt", name="pedestrian")
    run = tmp_path / "run"
    main(["fit", *tiny_args(tiny_coco, run, **{
        "data.image_size": SIZE, "model.classification": "focal", "model.init_checkpoint": teacher,
        "model.teacher_checkpoint": teacher, "model.freeze_batchnorm": True, "model.lr": 0.05,
        "trainer.max_epochs": None, "trainer.max_steps": 2, "trainer.check_val_every_n_epoch": None})])
    saved = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert saved["detector"]["label_map"]["names"][-1] == "pedestrian"
    before = read_checkpoint(teacher)["state_dict"]
    after = saved["state_dict"]
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)  # frozen: as loaded
    weights = [k for k in before if k.startswith("model.backbone.") and k.endswith(".weight")]
    assert any(not torch.equal(before[k], after[k]) for k in weights)  # while the weights trained


def test_freeze_stops_the_named_parameters_and_refuses_a_pattern_that_matches_none() -> None:
    from detector.training.module import freeze_parameters

    model = build_model("ssdlite_mobilenetv2", num_classes=3, width_mult=0.35, image_size=SIZE)
    patterns = ["backbone.*", "neck.*", "head.box_heads.*", "head.cls_heads.*.0.*"]
    count = freeze_parameters(model, patterns)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    # Only the class convs (the last 1x1 of each level's class head) still learn.
    assert trainable == [f"head.cls_heads.{i}.1.{k}" for i in range(6) for k in ("weight", "bias")]
    assert count == len(list(model.parameters())) - len(trainable)
    with pytest.raises(ValueError, match="match no parameter"):
        freeze_parameters(model, ["backbone.*", "bakbone.*"])
