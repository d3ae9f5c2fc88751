"""torch's intra-op threads around code made of small ops. A leaf module."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["single_threaded"]


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch's CPU ops on the calling thread alone for the duration, then restore the thread count.

    For code made of small ops (pre- and post-processing around the network): split over threads,
    each op pays for waking the other threads (under ``OMP_WAIT_POLICY=PASSIVE`` they sleep) more
    than it saves, and on a loaded machine it also waits for a free core. Measured at 320 px, batch 1,
    2 threads, quiet machine (``docs/benchmarks.md``, "Pre- and post-processing on one thread"):
    post-processing of 300 candidates 1.24 -> 0.83 ms, normalising a 1280x720 frame 0.78 -> 0.50 ms.
    ``torch.set_num_threads`` is process-wide, so another thread running torch at the same moment
    also runs on one thread until the block ends (about a millisecond).
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
