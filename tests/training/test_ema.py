"""The EMA of the weights: torch's constant decay exactly, and the ramped decay by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from detector.training.base import ema_decay_at, ema_multi_avg_fn


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def train_steps(model: nn.Module, averaged: list[AveragedModel], steps: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        images = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        model(images).square().mean().backward()
        optimizer.step()
        for ema in averaged:
            ema.update_parameters(model)


def test_decay_by_hand() -> None:
    assert ema_decay_at(0.99, 0, 7) == 0.99
    # 0.99 * (1 - e^-1) = 0.99 * 0.6321205588 = 0.6257993532
    assert ema_decay_at(0.99, 100, 100) == pytest.approx(0.6257993532, abs=1e-10)
    assert ema_decay_at(0.99, 100, 1) == pytest.approx(0.99 * (1 - math.exp(-0.01)))
    assert ema_decay_at(0.99, 100, 10_000) == pytest.approx(0.99, abs=1e-12)


def test_constant_decay_is_torchs_ema_exactly() -> None:
    model = small_model()
    model(torch.zeros(1, 3, 6, 6))  # materialise the lazy layer
    ours = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(0.9, 0), use_buffers=True)
    torchs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    train_steps(model, [ours, torchs], steps=6)
    for (name, a), b in zip(ours.state_dict().items(), torchs.state_dict().values()):
        assert torch.equal(a, b), name


def test_ramped_decay_follows_the_recurrence() -> None:
    # One scalar weight w_t after each update; EMA_0 = w_0, EMA_n = d_n EMA_{n-1} + (1 - d_n) w_n
    # with d_n = 0.9 (1 - exp(-n / 3)), n the number of updates averaged before this one.
    weight = nn.Parameter(torch.tensor([1.0]))
    holder = nn.Module()
    holder.weight = weight
    ema = AveragedModel(holder, multi_avg_fn=ema_multi_avg_fn(0.9, 3), use_buffers=True)
    values = [1.0, 5.0, -2.0, 4.0]
    expected = None
    for n, value in enumerate(values):
        with torch.no_grad():
            weight.fill_(value)
        ema.update_parameters(holder)
        if expected is None:
            expected = value
        else:
            d = 0.9 * (1 - math.exp(-n / 3))
            expected = d * expected + (1 - d) * value
        assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
