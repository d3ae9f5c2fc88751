"""Data tests: make the package importable from an uninstalled checkout."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

try:  # `pytest` (not `python -m pytest`) on an uninstalled checkout does not see the package.
    import detector  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO))
