"""The one-writer lock of a session folder: a ``lock`` file naming the process that holds it.

The file holds {pid, host, started, token}. A lock whose process is dead (on this host) is stale
and may be taken over; checks are serialized between processes by an flock on a side file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from sessions import atomic
from sessions.errors import SessionError
from sessions.provenance import now_iso


def acquire(folder: Path, name: str) -> str:
    """Take the lock of session folder ``folder`` (named ``name``); returns the holder's token.

    Raises SessionError when another live process holds it.
    """
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": now_iso(),
        "token": secrets.token_hex(8),
    }
    lock = folder / "lock"
    with _guard(folder):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(lock)
            if holder is not None and _alive(holder):
                raise SessionError(_held_message(name, lock, holder)) from None
            atomic.write_json(lock, me)  # take over the stale lock of a dead process
        else:
            with atomic.writing(lock), os.fdopen(fd, "w") as f:
                json.dump(me, f)
        atomic.remove_temps(folder, keep=lambda n: not is_lock_temp(n))  # the lock's own
    return me["token"]


def is_lock_temp(name: str) -> bool:
    """A temp file of the lock (written, and cleared, only under the guard)."""
    return name.startswith(".lock.")


def _held_message(name: str, lock: Path, holder: dict[str, Any]) -> str:
    """Who holds the lock, and what to do when that is not (or no longer) labtui."""
    pid, host = holder.get("pid"), holder.get("host")
    if host == socket.gethostname():
        check = f"`ps -p {pid} -o args` shows whether that process is labtui"
    else:
        check = f"check on {host} whether that process is labtui (`ps -p {pid} -o args`)"
    return (
        f"session {name} is being written by pid {pid} on {host}; {check}. If it is not, "
        f"remove {lock} to take the session over"
    )


def release(folder: Path, token: str) -> None:
    """Remove the lock if ``token`` still holds it."""
    with _guard(folder):
        holder = _read(folder / "lock")
        if holder and holder.get("token") == token:
            (folder / "lock").unlink()


def other_writer(folder: Path, token: str | None = None) -> str | None:
    """ "pid N on HOST" of a live process other than ``token``'s holding the lock, else None."""
    holder = _read(folder / "lock")
    if holder is None or holder.get("token") == token or not _alive(holder):
        return None
    return f"pid {holder.get('pid')} on {holder.get('host')}"


@contextlib.contextmanager
def _guard(folder: Path):
    """Serialize lock checks between processes (flock on a side file; POSIX only)."""
    try:
        import fcntl
    except ImportError:  # Windows: the O_EXCL create alone
        yield
        return
    fd = os.open(folder / ".lock-guard", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing, or empty after a kill mid-create: stale
    return data if isinstance(data, dict) else None


def _alive(holder: dict[str, Any]) -> bool:
    """Is the lock holder still running? A lock from another host is assumed alive."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: dead for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
