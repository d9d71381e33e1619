"""Where sessions and their runs live: the session root, safe names, run ids and run folders."""

from __future__ import annotations

import os
import re
from pathlib import Path

from core.spec import RunSpec
from sessions.errors import SessionError

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_RUN_DIR = re.compile(r"r(\d+)-")
_RUN_ID = re.compile(r"r\d+-[A-Za-z0-9._-]+")


def default_root() -> Path:
    """$LABTUI_HOME, else ./labtui-sessions."""
    return Path(os.environ.get("LABTUI_HOME") or "labtui-sessions").expanduser()


def validate_name(name: str, *, new: bool = False) -> str:
    """Return ``name`` if it is a safe session folder name, else raise SessionError. A ``new``
    name may not start with '-' either: every command would read it as an option."""
    if not _NAME.fullmatch(name) or ".." in name or (new and name.startswith("-")):
        raise SessionError(
            f"bad session name {name!r}: use up to 100 letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'"
        )
    return name


def session_path(root: Path | str | None, name: str) -> Path:
    """The folder of session ``name`` (a name in ``root``, or a path to a folder inside it)."""
    root = Path(root) if root is not None else default_root()
    is_path = "/" in name or os.sep in name
    if is_path:
        if ".." in Path(name).parts:
            raise SessionError(f"session path {name!r} must not contain '..'")
        path = Path(name).expanduser()
    else:
        path = root / validate_name(name)
    if path.resolve().parent != root.resolve():
        raise SessionError(f"session {name!r} is outside the session root {root}")
    return path


def run_id_for(index: int, spec: RunSpec, axes: list[str] | tuple[str, ...] = ()) -> str:
    """ "r000-none-s0", plus "-lr0.001" style parts for swept fields."""
    parts = [f"r{index:03d}", spec.variant, f"s{spec.seed}"]
    for name in axes:
        value = getattr(spec, name)
        text = f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(re.sub(r"[^A-Za-z0-9.]", "_", f"{name}{text}"))
    return "-".join(parts)


def check_run_id(run_id: object) -> str:
    """``run_id`` if it is one ``run_id_for`` could make (a safe folder name), else SessionError."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise SessionError(f"bad run id {run_id!r}")
    return run_id


def run_index(run_id: str) -> int:
    """The queue position a run id starts with ("r012-none-s0" -> 12)."""
    m = _RUN_DIR.match(run_id)
    if m is None:
        raise SessionError(f"bad run id {run_id!r}")
    return int(m.group(1))


def run_folders(runs: Path) -> list[tuple[int, str]]:
    """(index, run id) of every run folder in ``runs``, in queue order."""
    try:
        names = os.listdir(runs)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        m = _RUN_DIR.match(name)
        if m and (runs / name).is_dir():
            found.append((int(m.group(1)), name))
    return sorted(found)
