"""The LightningModule that trains an :class:`detector.modeling.ssdlite.SSDLite`."""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from detector.checkpoint import detector_meta, model_state_dict, read_checkpoint
from detector.evaluation.coco import CocoEvaluator
from detector.labels import LabelMap
from detector.modeling.ssdlite import SSDLite, build_model
from detector.training.schedules import warmup_cosine_scheduler

METRIC_KEYS = {"AP": "mAP", "AP50": "mAP50", "AP75": "mAP75", "APs": "mAP_small", "APm": "mAP_medium", "APl": "mAP_large"}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv / linear weights only; none on BatchNorm and biases (the MobileNet recipe)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if isinstance(module, nn.modules.batchnorm._BatchNorm) or name == "bias":
                no_decay.append(param)
            else:
                decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def load_matching_weights(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Load every tensor of a detector checkpoint whose name and shape fit ``model``.

    Returns the loaded names and the skipped ones (missing in the file, or another shape, as the
    class heads of a checkpoint with another number of classes).
    """
    source = model_state_dict(read_checkpoint(path))
    target = model.state_dict()
    loadable = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    model.load_state_dict(loadable, strict=False)
    skipped = sorted(set(target) - set(loadable))
    return sorted(loadable), skipped


class DetectorModule(pl.LightningModule):
    """Trains SSDLite with Nesterov SGD (or AdamW), warmup + cosine, optional EMA, COCO validation.

    Args:
        preset: model recipe name (see ``detector.PRESETS``).
        width_mult, neck, pretrained_backbone, classification: model options (see ``build_model``).
        image_size: network input side; linked from ``--data.image_size``.
        label_map: ``{"category_ids": [...], "names": [...]}``; linked from the training annotations,
            it sets the number of classes. Never set by hand.
        init_checkpoint: a detector checkpoint to fine-tune from (every weight whose shape fits).
        optimizer: ``sgd`` (Nesterov, momentum 0.9) or ``adamw``.
        lr: peak learning rate for the *global* batch (batch_size x devices x nodes); scale it
            linearly yourself when you change that batch. ``configs/`` state the batch they assume.
        weight_decay: applied to conv weights only, never to BatchNorm or biases.
        warmup_steps: linear warmup from ``warmup_factor * lr``; then cosine decay to 0 at the last step.
        ema_decay: keep an exponential moving average of the weights (validated and saved) when set.
        channels_last: run the network in channels-last memory format (about 1.3x faster training
            on the CPU here; measure on your hardware).
        min_scale, max_scale, reduce_boxes_in_lowest_layer: default boxes (see
            ``detector.modeling.anchors.DefaultBoxGenerator``); unset keeps the preset's (TF SSDLite's).
        iou_threshold: anchor-to-box IoU from which an anchor is a positive (unset: the preset's 0.5).
    """

    def __init__(
        self,
        preset: str = "ssdlite_mobilenetv2",
        width_mult: float = 1.0,
        neck: str = "ssdlite",
        pretrained_backbone: str = "none",
        init_checkpoint: str | None = None,
        classification: str = "softmax",
        image_size: int = 320,
        label_map: dict[str, list] | None = None,
        optimizer: str = "sgd",
        lr: float = 0.15,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        warmup_steps: int = 1000,
        warmup_factor: float = 0.001,
        ema_decay: float | None = None,
        eval_backend: str = "pycocotools",
        channels_last: bool = False,
        min_scale: float | None = None,
        max_scale: float | None = None,
        reduce_boxes_in_lowest_layer: bool | None = None,
        iou_threshold: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if label_map is None:
            raise ValueError("label_map is linked from --data.train_annotations; it cannot be missing")
        self.label_map = LabelMap.from_dict(label_map)
        self.model: SSDLite = build_model(
            preset,
            num_classes=self.label_map.num_classes,
            width_mult=width_mult,
            neck=neck,
            image_size=image_size,
            pretrained_backbone=pretrained_backbone,
            classification=classification,
            min_scale=min_scale,
            max_scale=max_scale,
            reduce_boxes_in_lowest_layer=reduce_boxes_in_lowest_layer,
            iou_threshold=iou_threshold,
        )
        if init_checkpoint:
            loaded, skipped = load_matching_weights(self.model, init_checkpoint)
            rank_zero_info(
                f"init_checkpoint {init_checkpoint}: loaded {len(loaded)} tensors, "
                f"re-initialised {len(skipped)}: {', '.join(skipped) if skipped else 'none'}"
            )
        self.ema_model: AveragedModel | None = None
        if ema_decay:
            self.ema_model = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            self.ema_model.requires_grad_(False)
        self.evaluator: CocoEvaluator | None = None

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)

    def _layout(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else images

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(self._layout(images))

    @property
    def eval_model(self) -> SSDLite:
        """The weights validation and export use: the EMA copy when there is one."""
        return self.ema_model.module if self.ema_model is not None else self.model

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, list[dict[str, Any]]], batch_idx: int) -> Tensor:
        images, targets = batch
        losses = self.model.compute_loss(self._layout(images), targets)
        loss = losses["loss"]
        self._stop_on_non_finite(loss, targets)
        batch_size = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/loss_box", losses["loss_box"], batch_size=batch_size)
        self.log("train/loss_cls", losses["loss_cls"], batch_size=batch_size)
        self.log("train/num_positives", losses["num_positives"].float(), batch_size=batch_size)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, batch_size=batch_size)
        return loss

    def _stop_on_non_finite(self, loss: Tensor, targets: list[dict[str, Any]]) -> None:
        bad = (~torch.isfinite(loss.detach())).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)  # every rank stops together
        if bad.item() == 0:
            return
        # The weights are still those of the last good step (no backward ran): keep them.
        path = f"{self.trainer.default_root_dir}/checkpoints/last.ckpt"
        self.trainer.save_checkpoint(path)
        names = [t.get("file_name", t.get("image_id")) for t in targets]
        raise FloatingPointError(
            f"non-finite loss ({loss.item()}) at global step {self.global_step} on images {names}; "
            f"the last good weights are in {path}. Lower the learning rate or check these images' boxes."
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema_model is not None:
            self.ema_model.update_parameters(self.model)

    # -- validation ----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        dataset = self.trainer.datamodule.val_dataset if self.trainer.datamodule is not None else None
        if dataset is None:
            raise RuntimeError("validation needs --data.val_images and --data.val_annotations")
        if self.evaluator is None:
            self.evaluator = CocoEvaluator(dataset.coco, label_map=self.label_map, backend=self.hparams.eval_backend)
        self.evaluator.reset()

    def validation_step(self, batch: tuple[Tensor, list[dict[str, Any]]], batch_idx: int) -> None:
        images, targets = batch
        model = self.eval_model
        cls_logits, bbox_regression = model(self._layout(images))
        losses = model.criterion(cls_logits, bbox_regression, model.anchors, targets)
        self.log("val/loss", losses["loss"], sync_dist=True, batch_size=images.shape[0])
        sizes = [tuple(int(s) for s in t["orig_size"]) for t in targets]
        predictions = model.postprocess(cls_logits, bbox_regression, sizes)
        self.evaluator.process([int(t["image_id"]) for t in targets], predictions)

    def on_validation_epoch_end(self) -> None:
        metrics = self.evaluator.evaluate()
        for key, name in METRIC_KEYS.items():
            # Every rank holds rank 0's result, so logging needs no further reduction.
            self.log(f"val/{name}", float(metrics[key]), prog_bar=key in ("AP", "AP50"))

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["detector"] = detector_meta(self.model, self.label_map)

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = parameter_groups(self.model, hp.weight_decay)
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=True)
        elif hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=hp.lr)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {hp.optimizer!r}")
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = warmup_cosine_scheduler(optimizer, hp.warmup_steps, total, hp.warmup_factor)
        return {"optimizer": optimizer, "lr_scheduler": schedule}
