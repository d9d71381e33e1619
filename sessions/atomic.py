"""Small file helpers that survive a SIGKILL at any moment: write-then-rename, or append a line."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def _temp_beside(path: Path, mode: str):
    """A temp file in ``path``'s folder, renamed over ``path`` only if the block succeeds."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make results private
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically."""
    with _temp_beside(Path(path), "w") as f:
        f.write(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_with(path: Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Replace ``path`` atomically with what ``writer`` writes into a binary file (torch.save)."""
    with _temp_beside(Path(path), "wb") as f:
        writer(f)


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(header)
    out.writerows(rows)
    write_text(path, buffer.getvalue())


def csv_line(values: Iterable[Any]) -> str:
    """One CSV line (floats keep their full repr, None is empty)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def complete_lines(path: Path) -> str:
    """The file's text up to its last newline: a line cut by a kill mid-write is dropped."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return ""
    return text[: text.rfind("\n") + 1]


def last_line(path: Path, chunk: int = 4096) -> str | None:
    """The last complete line of a file, reading only its tail; None when there is none."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - chunk))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    lines = tail[: tail.rfind("\n") + 1].splitlines()
    return lines[-1] if lines else None


def remove(*paths: Path) -> None:
    """Delete files; one that is already gone is fine."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
