"""BatchNorm layers that hold folded weights, given real statistics before training starts.

A network whose BatchNorm was folded into its convolutions (TFLite's ImageNet MobileNetV2 of
:mod:`detector.zoo`) arrives here with each BatchNorm an identity: running mean 0, running variance
``1 - eps``, weight 1, the folded bias as bias. In eval mode that computes the published network
exactly; in training mode BatchNorm normalises by the batch's own statistics instead, which rescales
and shifts every channel by its real mean and spread: the pretrained function is lost on the first
step (measured on raccoon: the detector fine-tuned from it scored below one trained from scratch).

:func:`unfold_batchnorm` gives each such layer the statistics of its input on real images (the
training set's first batches) and changes its affine so that eval mode computes exactly what it did:
with ``m, v`` the measured mean and variance, ``s = sqrt(v + eps)``, weight ``w`` and bias ``b``::

    running_mean = m, running_var = v, weight = w * s, bias = b + w * m
    (x - m) / s * (w * s) + b + w * m == w * x + b

so a training batch, whose statistics are close to ``m, v``, computes nearly the published function
too. Written by hand: neither torch nor Lightning re-estimates BatchNorm for folded weights.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

__all__ = ["identity_batchnorms", "unfold_batchnorm"]


def identity_batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The ``BatchNorm2d`` layers of ``model`` whose statistics are an identity (mean 0, ``var + eps == 1``)."""
    layers = []
    for module in model.modules():
        if not isinstance(module, nn.BatchNorm2d) or module.running_mean is None or module.running_var is None:
            continue
        if torch.all(module.running_mean == 0) and torch.allclose(module.running_var + module.eps,
                                                                 torch.ones_like(module.running_var), rtol=0, atol=1e-6):
            layers.append(module)
    return layers


@torch.no_grad()
def unfold_batchnorm(
    model: nn.Module,
    batches: Iterable[Tensor],
    all_reduce_sum: Callable[[Tensor], Tensor] | None = None,
) -> int:
    """Give every identity BatchNorm of ``model`` (:func:`identity_batchnorms`) the statistics of its
    input over ``batches`` (normalised images ``[B, 3, H, W]``, already on the model's device), keeping
    what eval mode computes unchanged. One pass: upstream layers compute the same in eval mode before
    and after. ``all_reduce_sum`` sums the per-channel sums over DDP processes, so every process
    sets the same numbers. Returns how many layers changed (0: nothing to do, ``batches`` not read)."""
    layers = identity_batchnorms(model)
    if not layers:
        return 0
    sums: dict[nn.BatchNorm2d, list[Tensor]] = {}

    def record(layer: nn.BatchNorm2d, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].detach().to(torch.float64)
        total = sums.setdefault(layer, [x.new_zeros(()), x.new_zeros(x.shape[1]), x.new_zeros(x.shape[1])])
        total[0] += x.numel() / x.shape[1]
        total[1] += x.sum(dim=(0, 2, 3))
        total[2] += (x * x).sum(dim=(0, 2, 3))

    handles = [layer.register_forward_pre_hook(record) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        for images in batches:
            model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    for layer in layers:
        count, total, squares = sums[layer]
        if all_reduce_sum is not None:
            count, total, squares = (all_reduce_sum(t) for t in (count, total, squares))
        mean = total / count
        var = (squares / count - mean * mean).clamp(min=0)
        scale = torch.sqrt(var + layer.eps)
        weight, bias = layer.weight.detach().to(torch.float64), layer.bias.detach().to(torch.float64)
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
        layer.weight.copy_(weight * scale)
        layer.bias.copy_(bias + weight * mean)
    return len(layers)
