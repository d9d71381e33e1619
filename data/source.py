"""Where the corpus text comes from: an explicit path, the cache, or a verified download."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

CANONICAL_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
CANONICAL_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
OFFLINE_HINT = "pass a local copy with --data PATH or set LABTUI_DATA=PATH"
CHUNK = 1 << 16
# Told (bytes received, total bytes or None) as a download goes; the front end draws it.
Progress = Callable[[int, int | None], None]


class DataError(Exception):
    """A problem with the corpus, told in one line the user can act on."""


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/labtui``, else ``~/.cache/labtui``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "labtui"


def cached_input() -> Path:
    """Where the downloaded tiny Shakespeare lives."""
    return cache_root() / "tinyshakespeare" / "input.txt"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def resolve_source(
    path: str | Path | None = None,
    *,
    progress: Progress | None = None,
    url: str | None = None,
    timeout: float = 30.0,
) -> tuple[Path, str]:
    """Return (text file, where it came from): explicit path, $LABTUI_DATA, cache, download."""
    if path is not None and str(path) != "":
        return Path(path), "--data"
    if env := os.environ.get("LABTUI_DATA"):
        return Path(env), "LABTUI_DATA"
    cached = cached_input()
    if cached.is_file() and sha256_file(cached) == CANONICAL_SHA256:
        return cached, "cache"
    url = url or os.environ.get("LABTUI_DATA_URL") or CANONICAL_URL
    download(url, cached, timeout=timeout, progress=progress)
    return cached, url


def download(
    url: str,
    dest: Path,
    *,
    sha256: str = CANONICAL_SHA256,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> Path:
    """Download ``url`` to ``dest``: temp file beside it, sha256 check, atomic rename.

    On any failure nothing is left behind (not even the folders it created).
    """
    try:
        created = _makedirs(dest.parent)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-", suffix=".part")
    except OSError as err:
        raise DataError(f"cannot write the corpus cache in {dest.parent}: {err.strerror}") from None
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, timeout=timeout, progress=progress)
        if digest != sha256:
            raise DataError(
                f"cannot download tiny Shakespeare (sha256 mismatch: got {digest[:16]}..., "
                f"expected {sha256[:16]}...): {OFFLINE_HINT}"
            )
        os.replace(tmp, dest)
        done = True
    finally:
        if not done:
            Path(tmp).unlink(missing_ok=True)
            for folder in reversed(created):
                try:
                    folder.rmdir()
                except OSError:
                    break
    return dest


def _fetch(url: str, out, *, timeout: float, progress: Progress | None) -> str:
    """Stream ``url`` into ``out``; return the sha256 of what arrived, complete or DataError."""
    h = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                h.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
    except urllib.error.HTTPError as err:
        raise DataError(_offline(f"HTTP {err.code} {err.reason}")) from None
    except urllib.error.URLError as err:
        raise DataError(_offline(str(err.reason))) from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise DataError(_offline(f"{type(err).__name__}: {err}".rstrip(": "))) from None
    if total is not None and received != total:
        raise DataError(_offline(f"interrupted after {received:,} of {total:,} bytes"))
    return h.hexdigest()


def _offline(reason: str) -> str:
    return f"cannot download tiny Shakespeare ({reason}): {OFFLINE_HINT}"


def _makedirs(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders that did not exist before (outermost first)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for f in missing:
        f.mkdir(exist_ok=True)
    return missing
