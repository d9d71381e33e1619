"""Where a session's numbers came from: code version, software, hardware, host, corpus."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def git_state(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the labtui checkout; (None, None) outside git or without commits."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), None if status is None else bool(status.strip())


def collect(corpus: Any = None, device: str = "auto", **settings: Any) -> dict[str, Any]:
    """The provenance block of session.json; ``device`` is the spec's device ("auto", "cuda").

    ``settings`` (executor, grouped, ...) are recorded as given; each run's precision is in its
    result.
    """
    import torch

    try:
        from core.device import device_name, resolve_device

        resolved = resolve_device(device)
        name = device_name(resolved)
    except Exception as err:  # an unavailable device is the run's failure to report, not ours
        resolved, name = device, f"unavailable ({err})"
    commit, dirty = git_state()
    return {
        "labtui_version": labtui_version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": resolved,
        "device_name": name,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "started": now_iso(),
        "corpus_source": None if corpus is None else str(corpus.source),
        "corpus_sha256": None if corpus is None else corpus.sha256,
        "corpus_vocab_size": None if corpus is None else corpus.vocab_size,
        # the characters in token-id order: a copied session can still decode its samples
        "corpus_vocab": None if corpus is None else "".join(corpus.itos),
        **settings,
    }


def labtui_version() -> str:
    """The installed labtui's version, from the package metadata (pyproject's version)."""
    try:
        return importlib.metadata.version("labtui")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
