"""single_threaded: one intra-op thread inside the block, the caller's count after it, error or not."""
from __future__ import annotations

import pytest
import torch

from detector.threads import single_threaded


def test_one_thread_inside_and_the_count_restored_after() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_threaded():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(ZeroDivisionError), single_threaded():
            1 / 0  # noqa: B018
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        with single_threaded():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
