"""Small file helpers that survive a SIGKILL at any moment: write-then-rename, or append a line.

A write that fails (a full disk, a read-only file system, a folder where a file should be)
raises WriteError, an OSError that names the file being written; a failed replacement leaves
the old file as it was and no temp file behind. Temp files are ``.<name>.<random>.tmp`` beside
their file: a process killed mid-write leaves one, which ``remove_temps`` clears later.
"""

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


TEMP_SUFFIX = ".tmp"


class WriteError(OSError):
    """Writing ``filename`` failed: "no space left on device while writing PATH"."""

    def __str__(self) -> str:
        reason = self.strerror or "error"
        return f"{reason[:1].lower()}{reason[1:]} while writing {self.filename}"


@contextlib.contextmanager
def writing(path: Path):
    """Turn an OSError raised in the block into a WriteError naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(err.errno, err.strerror or str(err), str(path)) from err


@contextlib.contextmanager
def _temp_beside(path: Path, mode: str):
    """A temp file in ``path``'s folder, renamed over ``path`` only if the block succeeds."""
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
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


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with _temp_beside(Path(path), "wb") as f:
        f.write(data)


def write_with(path: Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Replace ``path`` atomically with what ``writer`` writes into a binary file."""
    with _temp_beside(Path(path), "wb") as f:
        writer(f)


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(header)
    out.writerows(rows)
    write_text(path, buffer.getvalue())


def append_line(path: Path, line: str) -> None:
    """Append one line (ending in a newline) and flush it to disk before returning. A line cut
    by an earlier kill or failed write is cut off first, so that this one stands on its own."""
    path = Path(path)
    with writing(path):
        cut_torn_line(path)
        with open(path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def csv_line(values: Iterable[Any]) -> str:
    """One CSV line (floats keep their full repr, None is empty)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def complete_lines(path: Path) -> str:
    """The file's text up to its last newline: a line cut by a kill mid-write is dropped. Bytes
    that are not UTF-8 read as U+FFFD, so that the parser of the text names the line."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return text[: text.rfind("\n") + 1]


def cut_torn_line(path: Path, chunk: int = 4096) -> None:
    """Cut a last line without its newline (a write cut short), so that appends start on a line
    of their own. A missing file is fine."""
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with f:
        size = end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            cut = f.read(end - start).rfind(b"\n")
            if cut >= 0:
                if start + cut + 1 < size:
                    f.truncate(start + cut + 1)
                return
            end = start
        if size:
            f.truncate(0)


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


def remove_temps(folder: Path, keep: Callable[[str], bool] = lambda name: False) -> int:
    """Delete the temp files a killed writer left in ``folder`` (unless ``keep(name)``); returns
    how many. Only for a folder no live process is writing into."""
    removed = 0
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for name in names:
        if name.startswith(".") and name.endswith(TEMP_SUFFIX) and not keep(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(Path(folder) / name)
                removed += 1
    return removed


def remove(*paths: Path) -> None:
    """Delete files; one that is already gone is fine."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
