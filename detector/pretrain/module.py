"""The LightningModule that trains a :class:`MobileNetV2Classifier`."""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from detector.constants import IMAGENET_MEAN, IMAGENET_STD
from detector.modeling.backbone import BN_MOMENTUM
from detector.pretrain.model import CLASSIFIER_KEY, MobileNetV2Classifier, classifier_meta
from detector.training.base import TrainingModule

__all__ = ["ClassifierModule", "topk_correct"]


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """For ``logits`` ``[B, C]`` and ``labels`` ``[B]``: per ``k``, a float ``[B]`` of 1 where the label is
    among the top ``min(k, C)`` classes."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # [B, k_max]
    hits = top == labels[:, None]
    return [hits[:, :k].any(dim=1).float() for k in ks]


class ClassifierModule(TrainingModule):
    """Trains MobileNetV2 on labelled images: Nesterov SGD, warmup + cosine, optional label smoothing
    and EMA; logs ``train/loss``, ``val/loss``, ``val/top1`` and ``val/top5``.

    Args:
        class_names: linked from ``--data.train_dir``'s folder names; sets the number of classes.
        width_mult: MobileNetV2 width multiplier (use the detector's to transfer the trunk).
        dropout: before the linear layer.
        bn_momentum: BatchNorm running-statistics momentum (the detector's 0.03; short runs want more).
        pretrained: starting weights, ``none`` | ``imagenet`` | ``zoo:NAME`` | a path (see
            :class:`MobileNetV2Classifier`).
        preset: ``mobilenet_v2`` (torchvision's layers) or ``mobilenet_v2_tf`` (TF's SAME padding; needed to
            start from the zoo's TF ImageNet classifiers, ``zoo:mobilenet_v2_1.0_224_imagenet_quant``).
        image_size: network input side; linked from ``--data.image_size``; saved in checkpoints.
        lr: peak learning rate for the *global* batch (batch_size x devices x nodes); scale it linearly
            yourself when you change that batch. ``configs/`` state the batch they assume.
        momentum: Nesterov momentum.
        weight_decay: on conv and linear weights only, never on BatchNorm or biases.
        warmup_steps, warmup_factor: linear warmup from ``warmup_factor * lr``; then cosine to 0.
        label_smoothing: cross-entropy label smoothing (0 = off) for training; validation's loss is plain.
        ema_decay: keep an exponential moving average of the weights (validated, exported) when set.
    """

    def __init__(
        self,
        class_names: list[str] | None = None,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        bn_momentum: float = BN_MOMENTUM,
        pretrained: str = "none",
        image_size: int = 224,
        lr: float = 0.045,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        warmup_steps: int = 1000,
        warmup_factor: float = 0.01,
        label_smoothing: float = 0.0,
        ema_decay: float | None = None,
        preset: str = "mobilenet_v2",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not class_names:
            raise ValueError("class_names is linked from --data.train_dir's class folders; it cannot be missing")
        self.class_names = list(class_names)
        self.model = MobileNetV2Classifier(
            num_classes=len(self.class_names), width_mult=width_mult, dropout=dropout, pretrained=pretrained,
            bn_momentum=bn_momentum, preset=preset,
        )
        self.init_ema(ema_decay)

    def forward(self, images: Tensor) -> Tensor:
        """``images`` ``[B, 3, H, W]`` normalised -> ``logits`` ``[B, num_classes]``."""
        return self.model(images)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        images, labels = batch
        if images.shape[0] == 0:
            return None  # every image of the batch was unreadable
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        self.stop_on_non_finite(loss)
        batch_size = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/top1", (logits.argmax(1) == labels).float().mean(), batch_size=batch_size)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, batch_size=batch_size)
        return loss

    # -- validation ----------------------------------------------------------------------------
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        if images.shape[0] == 0:
            return
        logits = self.eval_model(images)
        top1, top5 = topk_correct(logits, labels, (1, 5))
        batch_size = images.shape[0]
        # Epoch values are batch-size-weighted means, i.e. exact accuracies over the split.
        self.log("val/loss", F.cross_entropy(logits, labels), sync_dist=True, batch_size=batch_size)
        self.log("val/top1", top1.mean(), sync_dist=True, prog_bar=True, batch_size=batch_size)
        self.log("val/top5", top5.mean(), sync_dist=True, batch_size=batch_size)

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASSIFIER_KEY] = classifier_meta(
            self.model, self.class_names, self.hparams.image_size, IMAGENET_MEAN, IMAGENET_STD
        )
