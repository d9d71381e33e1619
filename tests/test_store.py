"""The session store: folders, names, the lock, and events written to disk (hand-made events)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from core.events import (
    CheckpointSaved,
    EvalLogged,
    RunFinished,
    RunResult,
    RunStarted,
    StepLogged,
)
from core.spec import Study
from sessions import store
from sessions.listing import list_sessions
from sessions.store import (
    EVAL_COLUMNS,
    METRIC_COLUMNS,
    RESULT_COLUMNS,
    Session,
    SessionError,
    default_root,
)


@pytest.fixture
def study(tiny_spec):
    return Study(base=tiny_spec, grid={"variant": ("none", "rmsnorm"), "seed": (0, 1)})


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


def step(run_id, n, loss=2.5):
    return StepLogged(run_id, n, n * 256, loss + n / 100, 1.0 + n, 0.5, 1e-3, 1000.0, n * 0.1)


def evaluation(run_id, n, loss=2.0):
    return EvalLogged(run_id, n, n * 256, n * 0.1, loss, loss / 0.6931471805599453, 7.38905609893)


def result(run_id, status="finished", n=20, **metrics):
    values = dict(
        val_loss=2.0,
        val_bpc=2.885,
        val_ppl=7.389,
        best_val_loss=2.0,
        final_grad_norm=0.75,
        accuracy=0.3,
        macro_accuracy=0.1,
        embed_norm=0.4,
    )
    values.update(metrics)
    if status != "finished":
        values = {k: None for k in values}
    return RunResult(run_id, status, n, n * 256, 28576, "cpu", 1.5, **values)


def start(session, run_id, start_step=0):
    session.record(RunStarted(run_id, session.spec(run_id), "cpu", "CPU", 28576, start_step))


def test_create_lays_out_the_folder(root, study):
    """A new session holds session.json, the lock and one pending folder per run."""
    session = Session.create(root, study, provenance={"host": "h"})
    assert (session.path / "session.json").exists() and (session.path / "lock").exists()
    assert session.run_ids() == [
        "r000-none-s0",
        "r001-none-s1",
        "r002-rmsnorm-s0",
        "r003-rmsnorm-s1",
    ]
    assert all(r.status == "pending" and r.step == 0 for r in session.runs())
    assert session.spec("r003-rmsnorm-s1") == study.base.replace(variant="rmsnorm", seed=1)
    assert list(session.results().columns) == list(RESULT_COLUMNS)
    assert session.results().empty
    again = Session.open(root, session.name)
    assert again.study == study and again.provenance == {"host": "h"} and not again.writable
    session.close()
    assert not (session.path / "lock").exists()


def test_default_root_follows_labtui_home(monkeypatch, tmp_path):
    monkeypatch.setenv("LABTUI_HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home"
    monkeypatch.delenv("LABTUI_HOME")
    assert default_root() == store.Path("labtui-sessions")


def test_swept_axis_names_runs_and_adds_a_column(root, tiny_spec):
    study = Study(base=tiny_spec, grid={"variant": ("none",), "seed": (0,), "lr": (1e-3, 3e-4)})
    with Session.create(root, study) as session:
        assert session.run_ids() == ["r000-none-s0-lr0.001", "r001-none-s0-lr0.0003"]
        assert list(session.results().columns) == [*RESULT_COLUMNS, "lr"]
        added = session.add_runs([tiny_spec.replace(seed=7)])
        assert added == ["r002-none-s7-lr0.0003"]  # ids go on, never reused


def test_session_names_never_collide(root, study, monkeypatch):
    """Sessions started in the same second get apart; a taken name is retried."""
    names = {Session.create(root, study).name for _ in range(12)}
    assert len(names) == 12
    assert all(len(name.split("-")) == 3 for name in names)
    tries = iter(["20261128-061503-a3f9", "20261128-061503-a3f9", "20261128-061503-b000"])
    monkeypatch.setattr(store, "_candidate_name", lambda: next(tries))
    first, second = Session.create(root, study), Session.create(root, study)
    assert (first.name, second.name) == ("20261128-061503-a3f9", "20261128-061503-b000")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "a..b", "x" * 101, "a b", "é", "-/"])
def test_bad_names_are_refused(root, study, name):
    with pytest.raises(SessionError):
        Session.create(root, study, name=name)
    assert not root.exists() or not any(root.iterdir())


def test_an_existing_name_is_refused(root, study):
    Session.create(root, study, name="mine").close()
    with pytest.raises(SessionError, match="already exists"):
        Session.create(root, study, name="mine")


def test_open_refuses_missing_broken_and_outside(root, study, tmp_path):
    session = Session.create(root, study, name="ok")
    session.close()
    assert Session.open(root, str(session.path)).name == "ok"  # a path inside the root
    with pytest.raises(SessionError, match="no session"):
        Session.open(root, "nope")
    (root / "empty").mkdir()
    with pytest.raises(SessionError, match="not a labtui session"):
        Session.open(root, "empty")
    (root / "bad").mkdir()
    (root / "bad" / "session.json").write_text("{")
    with pytest.raises(SessionError, match="broken"):
        Session.open(root, "bad")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(SessionError, match="outside"):
        Session.open(root, str(tmp_path / "elsewhere"))
    with pytest.raises(SessionError, match=r"\.\."):
        Session.open(root, f"{root}/../root/ok")


def test_the_lock_keeps_a_second_writer_out(root, study):
    session = Session.create(root, study, name="locked")
    with pytest.raises(SessionError, match=f"being written by pid {os.getpid()} on"):
        Session.open(root, "locked", write=True)
    reader = Session.open(root, "locked")  # reading is always allowed
    assert reader.writer() == f"pid {os.getpid()} on {socket.gethostname()}"
    with pytest.raises(SessionError, match="read-only"):
        reader.add_runs([study.base])
    session.close()
    assert reader.writer() is None
    Session.open(root, "locked", write=True).close()


def test_a_stale_lock_is_taken_over(root, study):
    session = Session.create(root, study, name="stale")
    session.close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = root / "stale" / "lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "token": "x"}))
    taken = Session.open(root, "stale", write=True)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    taken.close()
    lock.write_text(json.dumps({"pid": dead.pid, "host": "another-host", "token": "x"}))
    with pytest.raises(SessionError, match=f"pid {dead.pid} on another-host"):
        Session.open(root, "stale", write=True)


def test_record_writes_each_event(root, study):
    session = Session.create(root, study)
    run_id = "r000-none-s0"
    start(session, run_id)
    observer = Session.open(root, session.name)
    for n in (1, 2, 3):
        session.record(step(run_id, n))
    session.record(evaluation(run_id, 3))
    state = {"step": 3, "model": {"w": torch.arange(4.0)}}
    session.record(CheckpointSaved(run_id, 3, state))
    folder = session.run_dir(run_id)
    assert session.run(run_id).status == "running" and session.run(run_id).step == 3
    assert observer.run(run_id).status == "running"  # a live writer holds the lock
    lines = (folder / "metrics.csv").read_text().splitlines()
    assert lines[0] == ",".join(METRIC_COLUMNS) and len(lines) == 4
    assert session.metrics(run_id)["loss"].tolist() == [2.51, 2.52, 2.53]
    assert list(session.evals(run_id).columns) == list(EVAL_COLUMNS)
    loaded = torch.load(folder / "resume.pt", weights_only=True)
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))

    session.record(CheckpointSaved(run_id, 20, state, final=True))
    session.record(RunFinished(run_id, result(run_id)))
    record = session.run(run_id)
    assert record.status == "finished" and record.result.val_loss == 2.0 and record.step == 20
    assert not (folder / "resume.pt").exists() and (folder / "checkpoint.pt").exists()
    saved = json.loads((folder / "result.json").read_text())
    assert saved["status"] == "finished" and saved["spec"] == session.spec(run_id).to_dict()
    rows = (session.path / "results.csv").read_text().splitlines()
    assert rows[0] == ",".join(RESULT_COLUMNS) and rows[1].startswith(
        "r000-none-s0,none,0,finished,2.0,"
    )
    assert session.load_checkpoint(run_id)["step"] == 3


def test_failed_run_keeps_its_traceback(root, study):
    session = Session.create(root, study)
    run_id = "r001-none-s1"
    start(session, run_id)
    session.record(step(run_id, 1))
    trace = 'Traceback (most recent call last):\n  File "x"\nRuntimeError: out of memory\n'
    session.record(RunFinished(run_id, result(run_id, "failed", 1), traceback=trace))
    record = session.run(run_id)
    assert record.status == "failed" and record.error == trace
    assert session.results()["status"].tolist() == ["failed"]
    assert (session.run_dir(run_id) / "error.txt").read_text() == trace
    assert session.begin(run_id) is None  # a failed run starts over, old files gone
    assert session.run(run_id).status == "pending"
    assert not (session.run_dir(run_id) / "error.txt").exists()


def test_an_abandoned_run_reads_as_interrupted(root, study):
    """A writer gone without RunFinished: the run shows interrupted; a cut last line is ignored."""
    session = Session.create(root, study)
    run_id = "r002-rmsnorm-s0"
    start(session, run_id)
    for n in (1, 2, 3):
        session.record(step(run_id, n))
    session.close()  # as if the process had died: no RunFinished
    with open(session.run_dir(run_id) / "metrics.csv", "a") as f:
        f.write("4,1024,0.4,2.5")  # a line cut by a kill mid-write
    reopened = Session.open(root, session.name)
    record = reopened.run(run_id)
    assert (record.status, record.step) == ("interrupted", 3)
    assert reopened.metrics(run_id)["step"].tolist() == [1, 2, 3]
    counts = {s.name: s.counts for s in list_sessions(root)}[session.name]
    assert counts["interrupted"] == 1 and counts["pending"] == 3


def test_begin_cuts_the_logs_back_to_the_checkpoint(root, study):
    session = Session.create(root, study)
    run_id = "r000-none-s0"
    start(session, run_id)
    for n in range(1, 6):
        session.record(step(run_id, n))
        if n % 2 == 0:
            session.record(evaluation(run_id, n))
        if n == 3:
            session.record(CheckpointSaved(run_id, 3, {"step": 3, "w": torch.ones(2)}))
    session.close()
    writer = Session.open(root, session.name, write=True)
    state = writer.begin(run_id)
    assert state["step"] == 3 and torch.equal(state["w"], torch.ones(2))
    assert writer.metrics(run_id)["step"].tolist() == [1, 2, 3]
    assert writer.evals(run_id)["step"].tolist() == [2]
    start(writer, run_id, start_step=3)
    writer.record(step(run_id, 4))
    assert writer.metrics(run_id)["step"].tolist() == [1, 2, 3, 4]
    writer.close()


def test_a_cancelled_run_resumes_and_its_result_goes(root, study):
    session = Session.create(root, study)
    run_id = "r000-none-s0"
    start(session, run_id)
    session.record(step(run_id, 1))
    session.record(CheckpointSaved(run_id, 1, {"step": 1}))
    session.record(RunFinished(run_id, result(run_id, "cancelled", 1)))
    assert session.run(run_id).status == "cancelled"
    assert session.results()["status"].tolist() == ["cancelled"]
    assert session.begin(run_id) == {"step": 1}
    assert session.run(run_id).status == "interrupted"
    assert session.results().empty


def test_list_sessions_counts_and_flags_broken_ones(root, study):
    session = Session.create(root, study, name="a")
    start(session, "r000-none-s0")
    session.record(RunFinished("r000-none-s0", result("r000-none-s0")))
    (root / "b").mkdir()
    (root / "b" / "session.json").write_text("[]")
    (root / "not-a-session").mkdir()
    found = {s.name: s for s in list_sessions(root)}
    assert set(found) == {"a", "b"}
    assert found["a"].counts["finished"] == 1 and found["a"].counts["pending"] == 3
    assert (
        found["a"].total == 4
        and found["a"].writer == f"pid {os.getpid()} on {socket.gethostname()}"
    )
    assert "broken" in found["b"].error
    assert list_sessions(root / "missing") == []
