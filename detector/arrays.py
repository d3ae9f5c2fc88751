"""Tensors and arrays: the one conversion of model outputs to numpy. A leaf module."""
from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any, dtype: type, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    """``x`` (a torch tensor on any device, an array, a list, or ``None`` for empty) as a numpy array of
    ``dtype``, reshaped to ``[-1, *shape_tail]`` (e.g. ``(4,)`` for boxes; ``()`` flattens)."""
    if hasattr(x, "detach"):  # a torch tensor, possibly on a GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x if x is not None else [], dtype=dtype).reshape(-1, *shape_tail)
