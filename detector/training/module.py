"""The LightningModule that trains an :class:`detector.modeling.ssdlite.SSDLite`."""
from __future__ import annotations

import fnmatch
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from detector.checkpoint import WEIGHTS_KEY, detector_meta, model_state_dict, read_checkpoint
from detector.evaluation.coco import CocoEvaluator
from detector.evaluation.evaluate import evaluation_notes, evaluation_step
from detector.labels import LabelMap, match_categories
from detector.modeling.ssdlite import SSDLite, build_model
from detector.slicing import FrameView
from detector.training.base import TrainingModule
from detector.training.distillation import ClassDistillation, extend_label_map
from detector.training.weights_choice import FinalWeightsComparison, WeightsChoice

# The evaluator's keys -> the names logged as ``val/<name>``.
LOGGED_METRICS = {"AP": "mAP", "AP50": "mAP50", "AP75": "mAP75", "APs": "mAP_small", "APm": "mAP_medium", "APl": "mAP_large"}


# build_model options that change what a network computes from the same weights (its padding, its
# input normalisation...), which the weights' shapes do not show: an init checkpoint must agree on them.
NETWORK_OPTIONS = ("backbone", "reduced_tail", "backbone_taps", "padding", "bn_eps", "mean", "std")


def check_same_network(config: dict[str, Any], checkpoint_config: dict[str, Any], path: str) -> None:
    """``ValueError`` when ``checkpoint_config`` (an init checkpoint's) and ``config`` (the model's)
    differ in :data:`NETWORK_OPTIONS`: its weights would load without complaint into a network that
    computes otherwise (e.g. a TF model without TF's SAME padding)."""
    def norm(value: Any) -> Any:
        return [round(float(v), 6) for v in value] if isinstance(value, (list, tuple)) else value

    differ = [key for key in NETWORK_OPTIONS
              if key in checkpoint_config and norm(config.get(key)) != norm(checkpoint_config[key])]
    if differ:
        theirs = checkpoint_config.get("preset", "another")
        details = ", ".join(f"{key} {checkpoint_config[key]} there, {config.get(key)} here" for key in differ)
        raise ValueError(
            f"--model.init_checkpoint {path} is a {theirs!r} network and --model.preset {config.get('preset')!r} "
            f"computes otherwise ({details}); give --model.preset {theirs}"
        )


def freeze_parameters(model: nn.Module, patterns: list[str]) -> int:
    """Stop training the parameters of ``model`` whose names match any of ``patterns`` (``fnmatch``);
    returns how many. ``ValueError`` for a pattern that matches none (a typo would freeze nothing)."""
    names = dict(model.named_parameters())
    unmatched = [p for p in patterns if not fnmatch.filter(names, p)]
    if unmatched:
        raise ValueError(f"freeze: {unmatched} match no parameter of the model (names look like "
                         f"{', '.join(list(names)[:3])}, ...)")
    frozen = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    for name in frozen:
        names[name].requires_grad_(False)
    return len(frozen)


def load_matching_weights(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Load every tensor of a detector checkpoint whose name and shape fit ``model``, after checking
    that it is the same network (:func:`check_same_network`).

    Returns the loaded names and the skipped ones (missing in the file, or another shape, as the
    class heads of a checkpoint with another number of classes).
    """
    checkpoint = read_checkpoint(path)
    check_same_network(model.config, checkpoint["detector"]["config"], path)
    source = model_state_dict(checkpoint)
    target = model.state_dict()
    loadable = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    model.load_state_dict(loadable, strict=False)
    skipped = sorted(set(target) - set(loadable))
    return sorted(loadable), skipped


class DetectorModule(TrainingModule):
    """Trains SSDLite with Nesterov SGD (or AdamW), warmup + cosine, optional EMA, COCO validation.

    Args:
        preset: model recipe name (see ``detector.PRESETS``).
        width_mult, neck, pretrained_backbone: model options (see ``build_model``).
        image_size: network input side, or ``[height, width]``; linked from ``--data.image_size``.
        label_map: ``{"category_ids": [...], "names": [...]}``; linked from the training annotations,
            it sets the number of classes. Never set by hand.
        init_checkpoint: a detector checkpoint to fine-tune from (every weight whose shape fits).
        optimizer: ``sgd`` (Nesterov, momentum 0.9) or ``adamw``.
        lr: peak learning rate for the *global* batch (batch_size x devices x nodes); scale it
            linearly yourself when you change that batch. ``configs/`` state the batch they assume.
        weight_decay: applied to conv weights only, never to BatchNorm or biases.
        warmup_steps: linear warmup from ``warmup_factor * lr``; then cosine decay to 0 at the last step.
        ema_decay: keep an exponential moving average of the weights (validated and saved) when set.
        ema_warmup_steps: ramp the EMA decay up as ``ema_decay * (1 - exp(-step / ema_warmup_steps))``
            (YOLOv5's ModelEMA, mmdetection's ExpMomentumEMA; 2000 is YOLOv5's): the EMA averages over
            about ``exp(step / ema_warmup_steps)`` steps, so over a run of a few hundred steps it stays
            close to the trained weights instead of the initial ones. 0 keeps the decay constant.
        compare_ema: with an EMA, validate the raw (trained) weights too, log ``val/mAP_ema`` and
            ``val/mAP_raw``, log ``val/mAP`` etc. of the better copy and record it in the checkpoints,
            so every tool loads it (:mod:`detector.training.weights_choice`); repeated at the end of
            ``fit`` when the last validation was earlier. Costs a second validation pass.
        channels_last: run the network in channels-last memory format (about 1.3x faster training
            on the CPU here; measure on your hardware).
        stride8_level: add a first feature level at stride 8 (MobileNetV2's C3; seven levels instead
            of six) for objects smaller than the 16-pixel cells of C4. It changes the network: more
            compute and anchors (see ``build_model``).
        min_scale, max_scale, reduce_boxes_in_lowest_layer: default boxes (see
            ``detector.modeling.anchors.DefaultBoxGenerator``); unset keeps the preset's (TF SSDLite's).
        anchor_scales: explicit default-box scales, one per level plus the last level's upper scale
            (fractions of the input side, as mmdetection's ``min_sizes`` and last ``max_size``);
            replaces ``min_scale``/``max_scale``'s even spread, e.g. to give the stride-8 level of
            ``stride8_level`` its own small scale and keep the six usual levels' scales.
        iou_threshold: anchor-to-box IoU from which an anchor is a positive (unset: the preset's 0.5),
            with ``assigner: iou``.

    Training-recipe options (issue #22; each off by default, so a config without them trains exactly
    as before; see ``detector.modeling.loss.MultiBoxLoss``):

        classification: the class loss and so the scores: ``softmax`` (cross-entropy, 3:1 hard-negative
            mining; softmax scores) or, with sigmoid scores, ``focal`` (sigmoid focal loss),
            ``varifocal`` (VarifocalNet: target the IoU of a positive's decoded box, positives weighted
            by it, negatives by 0.75 p^2) or ``quality_focal`` (GFL: ``|IoU - p|^2`` x BCE to the IoU).
            Inference cost is the same for every sigmoid loss (they decode as ``focal``).
        assigner: ``iou`` (SSD: IoU >= ``iou_threshold``, plus each box's best anchor) or ``atss``
            (ATSS: per box, the ``atss_topk`` anchors nearest its centre on each level, positive from
            the mean + std of their IoUs, centre inside the box; ``detector.modeling.atss``).
        atss_topk: ATSS candidates per level per box (unset: 9, the paper's).
        box_loss: ``smooth_l1`` (on encoded offsets, SSD's), ``giou`` or ``ciou`` (on decoded boxes,
            torchvision's IoU losses) or ``smooth_l1+giou``.
        box_loss_weight: weight of the IoU box term (unset: 2.0, as mmdetection's ATSS and GFL).

    Keeping classes the data does not label (issue #38; :mod:`detector.training.distillation`):

        teacher_checkpoint: a frozen detector with sigmoid scores and this model's anchors (e.g.
            ``zoo:ssdlite_mobilenet_v2_voc_person`` with the TF layout) whose classes are appended to the
            label map; their head rows start as the teacher's, get no label loss, and follow the
            teacher's scores (and its boxes where it is sure) on every training batch. Give the same
            file as ``init_checkpoint`` so the student starts as the teacher.
        distill_weight: weight of the distillation terms against the label loss.
        freeze_batchnorm: keep every BatchNorm layer's running statistics as loaded (eval-mode
            normalisation while training; the affine still learns): the pretrained (real-image)
            statistics survive training on another domain.
        freeze: parameters not trained, as ``fnmatch`` patterns of their names in the model (e.g.
            ``["backbone.*", "neck.*", "head.box_heads.*", "head.cls_heads.*.0.*"]``: only the class
            convs learn, over the teacher's features; with a teacher, its classes then keep its
            outputs exactly). A pattern that matches nothing is an error.

    view: how the trained model wants frames seen at inference, recorded in its checkpoints and exports
        (:class:`detector.slicing.FrameView`: ``{"slicing": {"overlap": 0.2, ...}, "slice_min_aspect":
        2.5, "letterbox": false}``); the Predictor and the tools use it unless told otherwise.
    """

    def __init__(
        self,
        preset: str = "ssdlite_mobilenetv2",
        width_mult: float = 1.0,
        neck: str = "ssdlite",
        pretrained_backbone: str = "none",
        init_checkpoint: str | None = None,
        classification: str = "softmax",
        image_size: int | list[int] = 320,
        label_map: dict[str, list] | None = None,
        optimizer: str = "sgd",
        lr: float = 0.15,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        warmup_steps: int = 1000,
        warmup_factor: float = 0.001,
        ema_decay: float | None = None,
        ema_warmup_steps: int = 2000,
        compare_ema: bool = True,
        eval_backend: str = "pycocotools",
        channels_last: bool = False,
        stride8_level: bool = False,
        min_scale: float | None = None,
        max_scale: float | None = None,
        reduce_boxes_in_lowest_layer: bool | None = None,
        anchor_scales: list[float] | None = None,
        iou_threshold: float | None = None,
        assigner: str = "iou",
        atss_topk: int | None = None,
        box_loss: str = "smooth_l1",
        box_loss_weight: float | None = None,
        teacher_checkpoint: str | None = None,
        distill_weight: float = 1.0,
        freeze_batchnorm: bool = False,
        view: dict[str, Any] | None = None,
        freeze: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if label_map is None:
            raise ValueError("label_map is linked from --data.train_annotations; it cannot be missing")
        self.label_map = LabelMap.from_dict(label_map)
        if teacher_checkpoint:
            teacher_names = read_checkpoint(teacher_checkpoint)["detector"]["label_map"]["names"]
            self.label_map = extend_label_map(self.label_map, teacher_names)
        self.model: SSDLite = build_model(
            preset,
            num_classes=self.label_map.num_classes,
            width_mult=width_mult,
            neck=neck,
            image_size=image_size,
            # An init checkpoint brings its own backbone: no ImageNet download to be overwritten.
            pretrained_backbone="none" if init_checkpoint else pretrained_backbone,
            classification=classification,
            stride8_level=stride8_level,
            min_scale=min_scale,
            max_scale=max_scale,
            reduce_boxes_in_lowest_layer=reduce_boxes_in_lowest_layer,
            anchor_scales=anchor_scales,
            iou_threshold=iou_threshold,
            assigner=assigner,
            atss_topk=atss_topk,
            box_loss=box_loss,
            box_loss_weight=box_loss_weight,
            resize="opencv",  # the training pipeline resizes with OpenCV, so inference must too
            view=FrameView.from_config(view).to_config() if view else None,
        )
        if init_checkpoint:
            loaded, skipped = load_matching_weights(self.model, init_checkpoint)
            rank_zero_info(
                f"init_checkpoint {init_checkpoint}: loaded {len(loaded)} tensors, "
                f"re-initialised {len(skipped)}: {', '.join(skipped) if skipped else 'none'}"
            )
        if freeze:
            frozen = freeze_parameters(self.model, freeze)
            rank_zero_info(f"freeze: {frozen} parameter tensors not trained ({', '.join(freeze)})")
        self.distillation: ClassDistillation | None = None
        if teacher_checkpoint:
            self.distillation = ClassDistillation(teacher_checkpoint, self.model, self.label_map)
            self.distillation.init_student_head(self.model)
            rank_zero_info(f"teacher_checkpoint {teacher_checkpoint}: classes {list(self.distillation.names)} "
                           "kept by distillation (their head rows copied from it)")
        self.init_ema(ema_decay, ema_warmup_steps)
        # "ema" / "model" -> its evaluator: the copies validated (both with an EMA and compare_ema).
        self.evaluators: dict[str, CocoEvaluator] = {}
        self.weights_choice: WeightsChoice | None = None
        self.validation_summary = ""  # the last validation in one line (RunCheckpoint prints it)

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> DetectorModule:
        super().train(mode)
        if mode:
            self._freeze_batchnorm()
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning never calls train() during fit (modules start in training mode), so freeze here.
        self._freeze_batchnorm()

    def _freeze_batchnorm(self) -> None:
        """With ``freeze_batchnorm``: every BatchNorm layer normalises with (and keeps) its running statistics."""
        if self.hparams.get("freeze_batchnorm", False):
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    @property
    def unlabelled_classes(self) -> list[int]:
        return self.distillation.unlabelled_classes if self.distillation is not None else []

    def _layout(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else images

    def prepare_images(self, images: Tensor) -> Tensor:
        return self._layout(images)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(self._layout(images))

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, list[dict[str, Any]]], batch_idx: int) -> Tensor:
        images, targets = batch
        images = self._layout(images)
        if self.distillation is None:
            losses = self.model.compute_loss(images, targets)
        else:
            model = self.model
            cls_logits, bbox_regression = model(images)
            losses = model.criterion(cls_logits, bbox_regression, model.anchors, targets,
                                     anchor_levels=model.anchor_levels, unlabelled_classes=self.unlabelled_classes)
            distilled = self.distillation.loss(images, cls_logits, bbox_regression)
            losses.update(distilled)
            losses["loss"] = losses["loss"] + self.hparams.distill_weight * (
                distilled["loss_distill_cls"] + distilled["loss_distill_box"])
        loss = losses["loss"]
        names = [t.get("file_name", t.get("image_id")) for t in targets]
        self.stop_on_non_finite(loss, f" on images {names}", "Lower the learning rate or check these images' boxes.")
        batch_size = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/loss_box", losses["loss_box"], batch_size=batch_size)
        self.log("train/loss_cls", losses["loss_cls"], batch_size=batch_size)
        self.log("train/num_positives", losses["num_positives"].float(), batch_size=batch_size)
        for key in ("loss_distill_cls", "loss_distill_box"):
            if key in losses:
                self.log(f"train/{key}", losses[key], batch_size=batch_size)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, batch_size=batch_size)
        return loss

    # -- validation ----------------------------------------------------------------------------
    def validated_models(self) -> dict[str, nn.Module]:
        """The copies validation scores: ``{"ema": ..., "model": ...}`` with an EMA and ``compare_ema``,
        else the one the tools load (the EMA when there is one)."""
        if self.ema_model is None:
            return {"model": self.model}
        if not self.hparams.get("compare_ema", True):
            return {"ema": self.ema_model.module}
        return {"ema": self.ema_model.module, "model": self.model}

    @property
    def evaluator(self) -> CocoEvaluator | None:
        """The evaluator of the copy whose metrics were logged last (``last_run`` after a validation)."""
        use = self.weights_choice.use if self.weights_choice is not None else None
        return self.evaluators.get(use) if use in self.evaluators else next(iter(self.evaluators.values()), None)

    def on_validation_epoch_start(self) -> None:
        dataset = self.trainer.datamodule.val_dataset if self.trainer.datamodule is not None else None
        if dataset is None:
            raise RuntimeError("validation needs --data.val_images and --data.val_annotations")
        for key in self.validated_models():
            if key not in self.evaluators:
                self.evaluators[key] = self._evaluator(dataset)
            self.evaluators[key].reset()

    def _evaluator(self, dataset: Any) -> CocoEvaluator:
        """A COCO evaluator of ``dataset``, its categories matched to this model's classes by name."""
        match = match_categories(self.label_map, dataset.coco.dataset["categories"], str(dataset.annotation_file))
        return CocoEvaluator(dataset.coco, label_map=match, backend=self.hparams.eval_backend)

    def validation_step(self, batch: tuple[Tensor, list[dict[str, Any]]], batch_idx: int) -> None:
        images, targets = batch
        for index, (key, model) in enumerate(self.validated_models().items()):
            cls_logits, bbox_regression = model(self._layout(images))
            if index == 0:  # the loss of the copy validated first (the EMA when there is one), as before
                losses = model.criterion(cls_logits, bbox_regression, model.anchors, targets,
                                         anchor_levels=model.anchor_levels, unlabelled_classes=self.unlabelled_classes)
                self.log("val/loss", losses["loss"], sync_dist=True, batch_size=images.shape[0])
            # The step tools/eval.py runs too, on the outputs the loss already computed.
            evaluation_step(self.evaluators[key],
                            lambda _, sizes: model.postprocess(cls_logits, bbox_regression, sizes),
                            images, targets)

    def on_validation_epoch_end(self) -> None:
        scores = {key: self.evaluators[key].evaluate() for key in self.validated_models()}
        metrics = next(iter(scores.values()))
        summary = f"val/mAP {metrics['AP']:.4f}, val/mAP50 {metrics['AP50']:.4f}"
        if len(scores) == 2:
            choice = WeightsChoice.compare(scores["ema"]["AP"], scores["model"]["AP"], self.global_step)
            metrics = scores[choice.use]
            self.log("val/mAP_ema", float(scores["ema"]["AP"]))
            self.log("val/mAP_raw", float(scores["model"]["AP"]))
            if not self.trainer.sanity_checking:
                self.weights_choice = choice
            summary = (f"val/mAP {metrics['AP']:.4f}, val/mAP50 {metrics['AP50']:.4f} "
                       f"({'EMA' if choice.use == 'ema' else 'raw'} weights; EMA {choice.val_mAP_ema:.4f}, "
                       f"raw {choice.val_mAP_raw:.4f})")
        for key, name in LOGGED_METRICS.items():
            # Every rank holds rank 0's result, so logging needs no further reduction.
            self.log(f"val/{name}", float(metrics[key]), prog_bar=key in ("AP", "AP50"))
        evaluator = next(iter(self.evaluators.values()))
        dataset = self.trainer.datamodule.val_dataset
        # Images left out (unreadable) are named only when the whole set was meant to be read.
        limit = self.trainer.limit_val_batches  # an int counts batches, a float is a fraction
        whole_set = isinstance(limit, float) and limit == 1.0 and not self.trainer.sanity_checking
        notes = evaluation_notes(dataset, "", evaluator.evaluated_images) if self.trainer.is_global_zero and whole_set else []
        self.validation_summary = "; ".join([summary, *notes])

    def fit_summary(self) -> list[str]:
        """Lines for the end-of-fit summary (:class:`detector.training.callbacks.RunCheckpoint`)."""
        return [self.weights_choice.describe()] if self.weights_choice is not None else []

    @torch.no_grad()
    def compare_weights_now(self) -> WeightsChoice | None:
        """Score the EMA and the raw weights on the validation set now, unless a validation at this
        step already did (or there is nothing to compare: no EMA, ``compare_ema`` off, no validation
        split); record and return the choice. :class:`FinalWeightsComparison` calls it after ``fit``."""
        models = self.validated_models()
        datamodule = self.trainer.datamodule
        already = self.weights_choice is not None and self.weights_choice.global_step == self.global_step
        if len(models) < 2 or already or not hasattr(datamodule, "evaluation_dataloader"):
            return self.weights_choice
        loader = datamodule.evaluation_dataloader()
        if loader is None:  # no validation split
            return self.weights_choice
        dataset = datamodule.val_dataset
        evaluators = {key: self._evaluator(dataset) for key in models}
        was_training = self.training
        self.eval()
        try:
            for images, targets in loader:
                images = self._layout(images.to(self.device))
                for key, model in models.items():
                    evaluation_step(evaluators[key], model.predict, images, targets)
        finally:
            self.train(was_training)
        scores = {key: evaluator.evaluate()["AP"] for key, evaluator in evaluators.items()}
        self.weights_choice = WeightsChoice.compare(scores["ema"], scores["model"], self.global_step)
        return self.weights_choice

    def configure_callbacks(self) -> list[Callback]:
        return [FinalWeightsComparison()]

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["detector"] = detector_meta(self.model, self.label_map)
        if self.weights_choice is not None and self.ema_model is not None:
            checkpoint["detector"][WEIGHTS_KEY] = self.weights_choice.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        entry = checkpoint.get("detector", {}).get(WEIGHTS_KEY)
        self.weights_choice = WeightsChoice.from_dict(entry) if entry else None
