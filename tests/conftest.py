"""Shared fixtures: the real corpus from ../shared, isolated caches and session roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED_CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
CANONICAL_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY = RunSpec(
    n_layer=2,
    n_embd=32,
    n_head=4,
    block_size=32,
    batch_size=8,
    iters=20,
    eval_interval=10,
    checkpoint_interval=10,
    device="cpu",
)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread, and a busy 2-core machine stays responsive."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own cache and session root; nothing touches ~/.cache or ./."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("LABTUI_HOME", str(tmp_path_factory.mktemp("sessions")))
    monkeypatch.delenv("LABTUI_DATA", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the subprocesses the tests start


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    """The canonical tiny Shakespeare text (read-only, from ../shared)."""
    if not SHARED_CORPUS.exists():
        pytest.fail(f"corpus missing: {SHARED_CORPUS}")
    return SHARED_CORPUS


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, corpus_path):
    """The prepared canonical corpus, prepared once per test session in its own cache."""
    from data import load_corpus

    cache = tmp_path_factory.mktemp("corpus-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        return load_corpus(corpus_path)
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture
def tiny_spec():
    """A model small enough to train a few dozen steps in a second or two on a CPU."""
    return TINY
