"""How the command-line tools answer bad input: one ``error:`` line naming the file or flag and the
problem, and a non-zero exit; never a traceback for what the user can fix. A leaf module.

The errors a user's input raises are :data:`USER_ERRORS` (the project raises them with messages that
name the file or option); anything else is a bug and keeps its traceback. ``DETECTOR_TRACEBACK=1`` shows
the traceback of a user error too.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["USER_ERRORS", "WeightsUnavailableError", "one_line", "report_user_errors"]

T = TypeVar("T")


class WeightsUnavailableError(ConnectionError):
    """Published weights that cannot be downloaded here; the message says where to put the file
    and what to do without it."""


#: What bad input raises: missing or malformed files, invalid values, weights that cannot be had, a
#: diverging run (its message names the step, the images and the checkpoint kept).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError,
                                                IsADirectoryError, PermissionError, ConnectionError,
                                                FloatingPointError)


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message keeps its lines, joined by ' | ')."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def report_user_errors(run: Callable[[], T], exit_code: int = 2) -> T | int:
    """``run()``; a :data:`USER_ERRORS` exception becomes ``error: <message>`` on stderr and ``exit_code``."""
    try:
        return run()
    except USER_ERRORS as error:
        if os.environ.get("DETECTOR_TRACEBACK"):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return exit_code
