"""A session's tables as CSV text or files: the one writer of `labtui export` and the console."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sessions import atomic
from sessions.tables import EXPORTS

__all__ = ["EXPORTS", "csv_text", "export_csv"]


def csv_text(session, what: str = "results") -> tuple[str, int]:
    """``session.export(what)`` as CSV text, and its number of rows (SessionError: bad ``what``)."""
    frame = session.export(what)
    return frame.to_csv(index=False), len(frame)


def export_csv(session, what: str, path: Path | str) -> int:
    """Write ``session.export(what)`` to ``path``; returns the rows written.

    A file is replaced atomically (whole, or not at all); a FIFO, device or socket is written to
    as a stream, never replaced; a symlink is followed: its target is written by these rules and
    the link stays. Raises SessionError or OSError.
    """
    text, rows = csv_text(session, what)
    if is_stream(Path(path)):
        with open(path, "w") as f:  # as given: /dev/stdout resolves to what cannot be reopened
            f.write(text)
    else:
        atomic.write_text(Path(os.path.realpath(path)), text)  # a symlink's target, not the link
    return rows


def is_stream(path: Path) -> bool:
    """Is ``path`` (symlinks followed) a FIFO, device or socket: something to write into, not
    to replace?"""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
