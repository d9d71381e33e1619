"""One place that turns a user's mistake into one clear line and exit code 2."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``labtui: error: message`` on stderr and exit with ``code``."""
    print(f"labtui: error: {message}", file=sys.stderr)
    raise typer.Exit(code)
