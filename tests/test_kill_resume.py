"""Real `labtui run` processes killed with SIGKILL or stopped with Ctrl-C, then resumed.

The resumed session must end with exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sessions.store import Session, SessionError

REPO = Path(__file__).resolve().parents[1]
STUDY = [
    "--layers", "2", "--width", "32", "--heads", "4", "--context", "32", "--batch", "8",
    "--iters", "120", "--checkpoint-interval", "10", "--eval-interval", "0",
    "--seeds", "0", "--variants", "none,rmsnorm", "--device", "cpu",
]  # fmt: skip

pytestmark = pytest.mark.slow


def labtui(root, corpus_path, *args) -> subprocess.Popen:
    # one thread: tiny models only lose from more, and a busy CPU makes them crawl
    env = {**os.environ, "PYTHONPATH": str(REPO), "LABTUI_HOME": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "labtui.cli", "run", "--data", str(corpus_path), *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process, timeout=240) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def wait_for_rows(path: Path, rows: int, process, timeout=120) -> None:
    """Poll until the CSV at ``path`` has more than ``rows`` data rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") - 1 > rows:
            return
        assert process.poll() is None, finish(process)[1]
        time.sleep(0.01)
    pytest.fail(f"{path} never got {rows} rows")


def numbers(session_path: Path) -> pd.DataFrame:
    return pd.read_csv(session_path / "results.csv").drop(columns=["wall_s"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_path) -> pd.DataFrame:
    """The same study, never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    code, output = finish(labtui(root, corpus_path, *STUDY, "--root", root, "--session", "ref"))
    assert code == 0, output
    return numbers(root / "ref")


def test_sigkill_then_resume_ends_as_if_uninterrupted(tmp_path, corpus_path, reference):
    root = tmp_path
    process = labtui(root, corpus_path, *STUDY, "--root", root, "--session", "killed")
    second = root / "killed" / "runs" / "r001-rmsnorm-s0"
    wait_for_rows(second / "metrics.csv", 15, process)
    process.send_signal(signal.SIGKILL)
    process.wait()

    lock = json.loads((root / "killed" / "lock").read_text())
    assert lock["pid"] == process.pid  # left behind by the dead writer
    session = Session.open(root, "killed")
    first, interrupted = session.runs()
    assert first.status == "finished" and first.result.val_loss is not None
    assert interrupted.status == "interrupted" and 15 < interrupted.step < 120
    assert session.writer() is None  # the lock is stale
    assert session.results()["run_id"].tolist() == ["r000-none-s0"]

    code, output = finish(labtui(root, corpus_path, "--resume", "killed", "--root", root))
    assert code == 0, output
    assert "[1/1] r001-rmsnorm-s0 finished" in output
    assert not (root / "killed" / "lock").exists()
    pd.testing.assert_frame_equal(numbers(root / "killed"), reference, check_exact=True)
    steps = pd.read_csv(second / "metrics.csv")["step"].tolist()
    assert steps == list(range(1, 121))  # no step lost or logged twice


def test_ctrl_c_cancels_cleanly_and_resumes(tmp_path, corpus_path, reference):
    root = tmp_path
    process = labtui(root, corpus_path, *STUDY, "--root", root, "--session", "stopped")
    wait_for_rows(root / "stopped" / "runs" / "r000-none-s0" / "metrics.csv", 5, process)
    with pytest.raises(SessionError, match=f"being written by pid {process.pid} on"):
        Session.open(root, "stopped", write=True)  # a live writer keeps the lock
    watcher = Session.open(root, "stopped")
    assert [r.status for r in watcher.runs()] == ["running", "pending"]
    process.send_signal(signal.SIGINT)
    code, output = finish(process, timeout=60)
    assert code == 130, output
    assert "labtui run --resume stopped" in output
    session = Session.open(root, "stopped")
    cancelled, pending = session.runs()
    assert (cancelled.status, pending.status) == ("cancelled", "pending")
    state = session.load_checkpoint(cancelled.run_id, final=False)
    assert state["step"] == cancelled.step
    assert not (root / "stopped" / "lock").exists()  # released on the way out

    code, output = finish(labtui(root, corpus_path, "--resume", "stopped", "--root", root))
    assert code == 0, output
    pd.testing.assert_frame_equal(numbers(root / "stopped"), reference, check_exact=True)
