"""The one learning-rate schedule of the project: linear warmup, then cosine decay to 0.

torch has the pieces (``LinearLR`` + ``CosineAnnealingLR`` in a ``SequentialLR``), but chained
schedulers compound their factors step by step, so resuming or a changed step count can drift by a
few ulps; a ``LambdaLR`` over this closed form gives the same factor for a step however it is reached,
which is what keeps seeded runs (and their resume) repeatable to the last digit.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["warmup_cosine", "warmup_cosine_scheduler"]


def warmup_cosine(warmup_steps: int, total_steps: int, warmup_factor: float) -> Callable[[int], float]:
    """LR factor per optimiser step: linear from ``warmup_factor`` to 1 over ``warmup_steps`` (at most
    ``total_steps - 1``), then cosine from 1 to 0 at ``total_steps``.

    >>> f = warmup_cosine(warmup_steps=2, total_steps=6, warmup_factor=0.1)
    >>> [round(f(s), 3) for s in range(7)]
    [0.1, 0.55, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    warmup = min(warmup_steps, total_steps - 1) if total_steps > 1 else 0

    def factor(step: int) -> float:
        if step < warmup:
            alpha = step / max(1, warmup)
            return warmup_factor * (1 - alpha) + alpha
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                            warmup_factor: float) -> dict[str, object]:
    """The schedule as Lightning's ``lr_scheduler`` entry: a ``LambdaLR`` stepped every optimiser step."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps, warmup_factor))
    return {"scheduler": scheduler, "interval": "step"}
