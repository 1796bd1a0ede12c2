"""The one error type the tools report without a traceback, and the runner that reports it."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, Optional, Sequence


class ToolError(Exception):
    """A problem with the user's input or environment: reported as ``error: ...`` with exit status 1."""


def run_cli(main: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Call ``main(argv)``; a ToolError becomes ``error: ...`` on stderr and exit status 1."""
    try:
        return main(argv) or 0
    except ToolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def console_script(main: Callable[[Optional[Sequence[str]]], Optional[int]]) -> Callable[..., int]:
    """Decorator for a tool's ``main(argv)``: run through :func:`run_cli`, so errors print as ``error: ...``."""

    @functools.wraps(main)
    def entry(argv: Optional[Sequence[str]] = None) -> int:
        return run_cli(main, argv)

    return entry
