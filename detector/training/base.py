"""What the detector's and the classifier's LightningModules share: the optional EMA copy of the
weights, statistics for folded BatchNorm before the first step, the non-finite-loss stop, the parameter groups, and the optimiser with its warmup + cosine
schedule. Each subclass builds ``self.model`` and calls :meth:`TrainingModule.init_ema`."""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Callable

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from detector.training.batchnorm import identity_batchnorms, unfold_batchnorm

from detector.training.schedules import warmup_cosine_scheduler

__all__ = ["OPTIMIZERS", "TrainingModule", "build_optimizer", "ema_decay_at", "ramped_ema_multi_avg_fn",
           "parameter_groups"]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")


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


def build_optimizer(model: nn.Module, optimizer: str, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """``sgd`` (Nesterov, ``momentum``) or ``adamw`` over :func:`parameter_groups`."""
    groups = parameter_groups(model, weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


def ema_decay_at(decay: float, warmup_steps: int, num_averaged: int) -> float:
    """The EMA decay for the update after ``num_averaged`` averaged steps.

    With ``warmup_steps`` 0 it is ``decay`` throughout. Otherwise it ramps as
    ``decay * (1 - exp(-num_averaged / warmup_steps))`` (YOLOv5's ModelEMA, mmdetection's
    ExpMomentumEMA): from scratch the first steps' weights are far from the final ones, and a fixed
    decay keeps ``decay ** n`` of them in the average for a long time.
    """
    if warmup_steps <= 0:
        return decay
    return decay * (1.0 - math.exp(-num_averaged / warmup_steps))


def ramped_ema_multi_avg_fn(decay: float, warmup_steps: int) -> Callable[[list[Tensor], list[Tensor], Tensor], None]:
    """``AveragedModel``'s ``multi_avg_fn`` for :func:`ema_decay_at` with ``warmup_steps`` > 0 (torch's
    ``get_ema_multi_avg_fn`` has a fixed decay only). The step count is ``AveragedModel.n_averaged``,
    which checkpoints hold, so a resumed run continues the ramp where it stopped."""

    @torch.no_grad()
    def update(ema_params: list[Tensor], current_params: list[Tensor], num_averaged: Tensor) -> None:
        step_decay = ema_decay_at(decay, warmup_steps, int(num_averaged))
        if torch.is_floating_point(ema_params[0]) or torch.is_complex(ema_params[0]):
            torch._foreach_lerp_(ema_params, current_params, 1.0 - step_decay)
        else:  # integer buffers (BatchNorm's num_batches_tracked): foreach lerp takes floats only
            for ema, current in zip(ema_params, current_params, strict=True):
                ema.copy_(ema * step_decay + current * (1.0 - step_decay))

    return update


class TrainingModule(pl.LightningModule):
    """A LightningModule that trains ``self.model`` (set by the subclass) with an optional EMA copy.

    The EMA copy is ``self.ema_model``, torch's ``AveragedModel`` (so checkpoints hold
    ``ema_model.module.*`` and ``ema_model.n_averaged``); it is updated right after every optimiser
    step, before any callback's ``on_train_batch_end``, so a checkpoint written at a step holds the
    EMA of exactly the steps it has taken. Subclass hyperparameters read here: ``lr``, ``momentum``,
    ``weight_decay``, ``warmup_steps``, ``warmup_factor`` and optionally ``optimizer`` (else SGD).
    """

    model: nn.Module
    ema_model: AveragedModel | None

    def init_ema(self, decay: float | None, warmup_steps: int = 0) -> None:
        """Keep an exponential moving average of ``self.model`` with ``decay`` (none when unset or 0),
        ramped over about ``warmup_steps`` when set (:func:`ema_decay_at`)."""
        self.ema_model = None
        if decay:
            average = ramped_ema_multi_avg_fn(decay, warmup_steps) if warmup_steps > 0 else get_ema_multi_avg_fn(decay)
            self.ema_model = AveragedModel(self.model, multi_avg_fn=average, use_buffers=True)
            self.ema_model.requires_grad_(False)

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation and export use: the EMA copy when there is one."""
        return self.ema_model.module if self.ema_model is not None else self.model

    def on_fit_start(self) -> None:
        self.unfold_folded_batchnorm()

    def unfold_folded_batchnorm(self, max_batches: int = 8) -> int:
        """Before the first step: BatchNorm layers that hold folded weights (identity statistics, as the
        zoo's TFLite ImageNet backbones) get statistics measured on the first ``max_batches`` training
        batches, their eval-mode function unchanged (:func:`detector.training.batchnorm.unfold_batchnorm`),
        so training-mode BatchNorm starts from the pretrained function. Returns the layers changed."""
        if not identity_batchnorms(self.model):
            return 0
        datamodule = self.trainer.datamodule
        loader = datamodule.train_dataloader() if datamodule is not None else self.trainer.train_dataloader
        seen = [0]

        def images() -> Iterator[Tensor]:
            for index, batch in enumerate(loader):
                if index >= max_batches:
                    break
                seen[0] += int(batch[0].shape[0])
                yield self.prepare_images(batch[0].to(self.device))

        reduce = self._sum_over_processes if self.trainer.world_size > 1 else None
        changed = unfold_batchnorm(self.model, images(), reduce)
        if self.ema_model is not None:  # the average starts from the same weights
            self.ema_model.module.load_state_dict(self.model.state_dict())
        rank_zero_info(f"{changed} BatchNorm layers held folded weights (identity statistics, e.g. a TFLite "
                       f"ImageNet backbone): statistics measured on {seen[0]} training images, the layers' "
                       "function kept (detector/training/batchnorm.py)")
        return changed

    def _sum_over_processes(self, tensor: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def prepare_images(self, images: Tensor) -> Tensor:
        """The layout the model takes its images in (subclasses may change it)."""
        return images

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema_model is not None:
            self.ema_model.update_parameters(self.model)

    def stop_on_non_finite(self, loss: Tensor, detail: str = "", advice: str = "Lower the learning rate.") -> None:
        """Raise ``FloatingPointError`` when ``loss`` is NaN or infinite on any process, after saving
        the weights (still those of the last good step: no backward ran) to ``checkpoints/last.ckpt``."""
        bad = (~torch.isfinite(loss.detach())).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)  # every rank stops together
        if bad.item() == 0:
            return
        path = f"{self.trainer.default_root_dir}/checkpoints/last.ckpt"
        self.trainer.save_checkpoint(path, weights_only=False)
        raise FloatingPointError(
            f"non-finite loss ({loss.item()}) at global step {self.global_step}{detail}; "
            f"the last good weights are in {path}. {advice}"
        )

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = build_optimizer(self.model, hp.get("optimizer", "sgd"), hp.lr, hp.momentum, hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = warmup_cosine_scheduler(optimizer, hp.warmup_steps, total, hp.warmup_factor)
        return {"optimizer": optimizer, "lr_scheduler": schedule}
