"""User errors at the command line: one line naming the file or field and the fix, exit status 2, no traceback.

Every error the toolkit raises for bad input is a ``ValueError`` (configuration, results, run-directory and
model-loading errors derive from it) or an ``OSError`` naming its file (missing, unreadable, a file where a
folder belongs, a full disk); :func:`exit_2_on_user_error` turns either into ``error: <message>`` on stderr.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["USER_ERRORS", "check_out_dir", "exit_2_on_user_error", "whole_number"]

USER_ERRORS = (ValueError, OSError)
"""What bad input raises (each message names its file or field); anything else is a bug and keeps its traceback."""

Main = Callable[[Sequence[str] | None], int]


def exit_2_on_user_error(main: Main) -> Main:
    """Wrap a command-line ``main(argv) -> status`` so a user error prints ``error: ...`` and returns 2."""

    @functools.wraps(main)
    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapped


def check_out_dir(path: Path, option: str = "--out") -> Path:
    """``path``, refused up front if it exists and is not a folder (before any work or any file is written).

    Raises:
        ValueError: Naming the option and the path.
    """
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option}: {path} is a file, not a folder; pass a folder (it is created if missing)")
    return path


def whole_number(text: str) -> int:
    """An argparse ``type``: a whole number >= 0, else argparse's one-line usage error (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
