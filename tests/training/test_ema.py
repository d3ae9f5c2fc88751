"""The ramped EMA decay of the weights, by hand (a constant decay is torch's own ``get_ema_multi_avg_fn``)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from detector.training.base import ema_decay_at, ramped_ema_multi_avg_fn


def test_decay_by_hand() -> None:
    assert ema_decay_at(0.99, 0, 7) == 0.99
    # 0.99 * (1 - e^-1) = 0.99 * 0.6321205588 = 0.6257993532
    assert ema_decay_at(0.99, 100, 100) == pytest.approx(0.6257993532, abs=1e-10)
    assert ema_decay_at(0.99, 100, 1) == pytest.approx(0.99 * (1 - math.exp(-0.01)))
    assert ema_decay_at(0.99, 100, 10_000) == pytest.approx(0.99, abs=1e-12)


def test_ramped_decay_follows_the_recurrence() -> None:
    # One scalar weight w_t after each update; EMA_0 = w_0, EMA_n = d_n EMA_{n-1} + (1 - d_n) w_n
    # with d_n = 0.9 (1 - exp(-n / 3)), n the number of updates averaged before this one.
    weight = nn.Parameter(torch.tensor([1.0]))
    holder = nn.Module()
    holder.weight = weight
    ema = AveragedModel(holder, multi_avg_fn=ramped_ema_multi_avg_fn(0.9, 3), use_buffers=True)
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
