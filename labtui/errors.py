"""One place that turns a user's mistake into one clear line and exit code 2."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import typer

F = TypeVar("F", bound=Callable)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``labtui: error: message`` on stderr and exit with ``code``."""
    print(f"labtui: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def os_error_line(err: OSError) -> str:
    """ "read-only file system: /data/sessions/lock" (an atomic.WriteError says it itself)."""
    if type(err).__str__ is not OSError.__str__ or not err.strerror:
        return str(err)
    reason = err.strerror[:1].lower() + err.strerror[1:]
    names = [str(n) for n in (err.filename, err.filename2) if n is not None]
    return f"{reason}: {' -> '.join(names)}" if names else reason


def error_line(err: BaseException) -> str:
    """Any error as one line for the user: an operating-system error as os_error_line says it,
    any other by its message."""
    return os_error_line(err) if isinstance(err, OSError) else str(err)


def guard(command: F) -> F:
    """Run a command with any operating-system error it lets through (a session root that is a
    file or read-only, a session file of the wrong kind, a full disk) turned into one line and
    exit code 2: the class is handled at the boundary, so that no case shows a traceback."""

    @functools.wraps(command)
    def guarded(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:  # `labtui export | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
        except OSError as err:
            fail(os_error_line(err))

    return guarded  # type: ignore[return-value]
