"""Keeping a frozen teacher's classes while the other classes learn new data (learning without forgetting).

A driving model learns vehicles from CARLA, which labels no pedestrians, so a person class trained there
would learn "no person anywhere". Instead (Li & Hoiem 2016, "Learning without Forgetting", applied per
anchor as in Shmelkov et al. 2017, "Incremental Learning of Object Detectors without Catastrophic
Forgetting"): the student starts from the teacher's weights, its head rows for the teacher's classes are
the teacher's own, and on every training batch those classes' scores and the boxes the teacher is sure
of are pulled towards what the frozen teacher predicts on the same images. The annotations' classes learn
from the labels as usual; the teacher's classes get no label loss at all.

Both networks must predict over the same anchors (same layout, same input size): the teacher's outputs
are then targets anchor by anchor, with no matching. Scores are sigmoids (``focal``-family
classification on both sides), so one class can be distilled without touching the others.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.checkpoint import model_state_dict, read_checkpoint
from detector.labels import LabelMap
from detector.modeling.loss import IOU_AWARE
from detector.modeling.ssdlite import SSDLite, build_model

SIGMOID_CLASSIFICATIONS = ("focal", *IOU_AWARE)


def extend_label_map(label_map: LabelMap, names: Sequence[str]) -> LabelMap:
    """``label_map`` with the classes of ``names`` it lacks appended (new ids after its largest), so the
    annotations' labels 1..K keep their numbers."""
    extra = [name for name in names if name not in label_map.names]
    next_id = max(label_map.category_ids, default=0) + 1
    return LabelMap(label_map.category_ids + tuple(range(next_id, next_id + len(extra))), label_map.names + tuple(extra))


class ClassDistillation:
    """A frozen teacher whose classes a student keeps (see the module docstring).

    Not an ``nn.Module`` attribute of the training module on purpose: the teacher is neither trained,
    averaged by the EMA nor saved in checkpoints; it is rebuilt from ``path`` where training resumes.

    Args:
        path: the teacher's checkpoint (any name :func:`detector.checkpoint.read_checkpoint` reads).
        student: the model being trained; the teacher is rebuilt at its input size (so both have the
            same anchors) and every distilled class must be one of the student's classes.
        student_labels: the student's label map.
    """

    def __init__(self, path: str, student: SSDLite, student_labels: LabelMap) -> None:
        checkpoint = read_checkpoint(path)
        meta = checkpoint["detector"]
        teacher = build_model({**meta["config"], "image_size": list(student.image_size)})
        teacher.load_state_dict(model_state_dict(checkpoint))
        self.teacher = teacher.eval().requires_grad_(False)
        self.path = path
        teacher_labels = LabelMap.from_dict(meta["label_map"])
        for role, model in (("teacher", teacher), ("student", student)):
            if model.config["classification"] not in SIGMOID_CLASSIFICATIONS:
                raise ValueError(f"class distillation needs sigmoid scores; the {role} ({path if role == 'teacher' else 'this model'}) "
                                 f"has classification {model.config['classification']!r}: use one of {SIGMOID_CLASSIFICATIONS}")
        if teacher.anchors.shape != student.anchors.shape or not torch.allclose(teacher.anchors, student.anchors):
            raise ValueError(
                f"the teacher {path} and this model have different anchors ({teacher.anchors.shape[0]} against "
                f"{student.anchors.shape[0]}): give the model the teacher's anchor options "
                f"(min_scale {teacher.config['min_scale']}, max_scale {teacher.config['max_scale']}, "
                f"reduce_boxes_in_lowest_layer {teacher.config['reduce_boxes_in_lowest_layer']})")
        missing = [name for name in teacher_labels.names if name not in student_labels.names]
        if missing:
            raise ValueError(f"the student has no class {missing} of the teacher {path}")
        self.names = tuple(teacher_labels.names)
        # Logit columns: label i is column i (column 0 is background's, unused by sigmoid scores).
        self.teacher_columns = [teacher_labels.names.index(n) + 1 for n in self.names]
        self.student_columns = [student_labels.names.index(n) + 1 for n in self.names]

    def init_student_head(self, student: SSDLite) -> None:
        """Copy the teacher's class-head rows of its classes into the student's, level by level (the
        rest of the network is the teacher's already, from ``init_checkpoint``)."""
        with torch.no_grad():
            for mine, theirs in zip(student.head.cls_heads, self.teacher.head.cls_heads):
                src, dst = theirs[-1], mine[-1]
                anchors = dst.out_channels // student.num_classes
                src_w = src.weight.view(anchors, self.teacher.num_classes, *src.weight.shape[1:])
                dst_w = dst.weight.view(anchors, student.num_classes, *dst.weight.shape[1:])
                src_b = src.bias.view(anchors, self.teacher.num_classes)
                dst_b = dst.bias.view(anchors, student.num_classes)
                for t, s in zip(self.teacher_columns, self.student_columns):
                    dst_w[:, s] = src_w[:, t]
                    dst_b[:, s] = src_b[:, t]

    @property
    def unlabelled_classes(self) -> list[int]:
        """The student's labels the annotations never carry (no label loss there)."""
        return list(self.student_columns)

    def loss(self, images: Tensor, cls_logits: Tensor, bbox_regression: Tensor,
             box_threshold: float = 0.5) -> dict[str, Tensor]:
        """The distillation terms on one batch.

        Args:
            images: ``[B, 3, H, W]`` the student's (normalised) input; the teacher runs on it too.
            cls_logits: ``[B, A, C]`` the student's logits; bbox_regression: ``[B, A, 4]`` its offsets.
            box_threshold: the teacher's score from which an anchor is the teacher's positive: its box is
                distilled too, and the terms are divided by the number of such anchors (at least 1).

        Returns:
            ``loss_distill_cls``: GFL's quality focal loss of each distilled class's sigmoid score
            against the teacher's (a soft target: ``|q - p|^2`` BCE, summed over anchors);
            ``loss_distill_box``: smooth-L1 of the student's offsets to the teacher's where the
            teacher's best distilled score is at least ``box_threshold``, weighted by that score.

        Both are divided by the teacher's positives, not the label loss's: a batch of frames where the
        class is rare (persons in CARLA) would otherwise teach the student little but to score it low
        everywhere, which is how the first run lost every person (``docs/driving.md``).
        """
        teacher = self.teacher.to(images.device)
        with torch.no_grad():
            teacher_logits, teacher_boxes = teacher(images)
            targets = teacher_logits[..., self.teacher_columns].float().sigmoid()  # [B, A, K]
        logits = cls_logits[..., self.student_columns].float()
        modulator = (targets - logits.sigmoid()).abs().pow(2.0)
        loss_cls = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * modulator).sum()
        confidence = targets.max(dim=-1).values  # [B, A]
        sure = confidence >= box_threshold
        if sure.any():
            box = F.smooth_l1_loss(bbox_regression[sure].float(), teacher_boxes[sure].float(), beta=1.0, reduction="none")
            loss_box = (box.sum(dim=-1) * confidence[sure]).sum()
        else:
            loss_box = bbox_regression.sum() * 0.0
        normaliser = sure.sum().clamp(min=1).float()
        return {"loss_distill_cls": loss_cls / normaliser, "loss_distill_box": loss_box / normaliser}
