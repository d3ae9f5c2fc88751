"""Suite-wide settings and helpers."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

# One intra-op thread: the tests use tiny models, where more threads cost more than they give on a
# small (and often shared) CI machine. Subprocesses the tests start set OMP_NUM_THREADS themselves.
torch.set_num_threads(1)


class CodePayload:
    """A pickle payload: unpickling it runs code that writes ``marker`` (what a hostile checkpoint does).
    Pickle stores only the ``__reduce__`` call, so loading it needs nothing of this module."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


@pytest.fixture
def code_payload(tmp_path: Path) -> CodePayload:
    """A :class:`CodePayload` whose marker is ``tmp_path / "code_ran"`` (absent until code runs)."""
    return CodePayload(tmp_path / "code_ran")
