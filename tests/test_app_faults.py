"""The console used the hard way, under Pilot with real files and real tiny training: damaged
session files, keys typed while it leaves or switches sessions, a session it cannot write, a
damaged checkpoint, absurd form values. It never crashes, loses nothing and says what is wrong."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest
from test_app import LONG, TINY, add_study, console, press, wait_for
from test_app_sessions import choose, lock_in_another_process
from test_app_snapshots import demo_session, measured_step_times, step_times  # noqa: F401

from core.spec import Study
from core.status import RunStatus
from labtui.app import LabApp
from labtui.launch import open_for_console
from labtui.widgets.forms import ConfirmQuit, ConfirmSwitch
from labtui.widgets.sample import SamplePanel
from sessions.listing import list_sessions
from sessions.store import Session

pytestmark = pytest.mark.usefixtures("step_times")


def messages(app) -> list[str]:
    return [n.message for n in app._notifications]


def damage(root, name: str = "demo") -> dict[str, str]:
    """Damage four finished runs of session ``name`` as a crash, a disk or a hand would, each in
    its own way; returns what was done to which run."""
    runs = Session.open(root, name).run_ids()
    folder = root / name / "runs"
    with open(folder / runs[0] / "metrics.csv", "a") as f:
        f.write("garbage,row\n")  # a row of the wrong width
    (folder / runs[1] / "evals.csv").write_bytes(bytes(range(256)) * 4)  # not text
    (folder / runs[3] / "result.json").write_text("[1, 2]\n")  # JSON, not an object
    result = json.loads((folder / runs[4] / "result.json").read_text())
    (folder / runs[4] / "result.json").write_text(json.dumps({**result, "val_ppl": "abc"}))
    return {"metrics": runs[0], "evals": runs[1], "list": runs[3], "typed": runs[4]}


async def test_damaged_run_files_are_said_not_raised(tmp_path):
    """A session whose run files are damaged opens: the other runs as usual, the damaged ones
    without curves (a bad CSV) or without a result (a bad result.json), and one notification
    names the first file."""
    demo_session(tmp_path)
    damaged = damage(tmp_path)
    session = Session.open(tmp_path, "demo", write=True)
    app = LabApp(session=session, root=tmp_path, device="cpu")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.4)
        assert len(app.views) == 9
        assert app.views[damaged["metrics"]].curves["step"] == []
        assert app.views[damaged["evals"]].curves["step"] == []
        ok = [v for r, v in app.views.items() if r not in damaged.values()]
        assert all(v.curves["step"] for v in ok)
        (notice,) = [n for n in app._notifications if n.title == "Damaged session files"]
        assert f"{damaged['metrics']}/metrics.csv line 42" in notice.message
        assert "(and 1 more)" in notice.message
        # a result.json that cannot be a result reads as none: the run can be redone
        for run_id in (damaged["list"], damaged["typed"]):
            assert app.views[run_id].status == RunStatus.INTERRUPTED
            assert app.views[run_id].result is None
        assert set(session.results()["run_id"]).isdisjoint((damaged["list"], damaged["typed"]))
        await pilot.press("q")


async def test_the_browser_lists_and_opens_a_damaged_session(corpus, tmp_path):
    demo_session(tmp_path)
    damaged = damage(tmp_path)
    assert [s.error for s in list_sessions(tmp_path)] == [None]
    app = console(corpus, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await choose(pilot, "demo")
        await wait_for(pilot, lambda: app.session is not None)
        await pilot.pause(0.4)
        assert app.session.name == "demo" and len(app.views) == 9
        assert any(f"{damaged['metrics']}/metrics.csv" in m for m in messages(app))
        await pilot.press("q")


async def test_a_write_failure_leaves_the_runs_resumable(corpus, tmp_path):
    """A write failure in the middle of a run (here a folder where resume.pt goes) stops the
    drain: the run shows interrupted, as its folder says, and r resumes it once the session can
    be written again."""
    spec = LONG.replace(checkpoint_interval=1000)
    app = console(corpus, tmp_path, Study(base=spec, grid={"seed": (0, 1)}))
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        first, second = app.views.values()
        await press(pilot, "enter")
        await wait_for(pilot, lambda: first.status == RunStatus.RUNNING)
        blocker = app.session.run_dir(first.run_id) / "resume.pt"
        blocker.mkdir()
        await wait_for(pilot, lambda: not app.training)
        assert first.status == RunStatus.INTERRUPTED and first.step >= 1000
        assert app.session.run(first.run_id).status == RunStatus.INTERRUPTED
        assert second.status == RunStatus.PENDING

        blocker.rmdir()
        app.main_screen.queue.select(first.run_id)
        await pilot.pause(0.1)
        await press(pilot, "r")
        assert f"resuming {first.run_id}" in messages(app)
        await wait_for(pilot, lambda: first.status == RunStatus.RUNNING)
        await press(pilot, "C")
        await wait_for(pilot, lambda: not app.training)
        assert first.status == RunStatus.CANCELLED
        await pilot.press("q")


@pytest.mark.parametrize("key", ["s", "b"])
async def test_a_key_typed_right_after_quitting_does_nothing(tmp_path, key):
    """q, then a key before the console is gone: no screen is built on the app being torn
    down (it was: a traceback on the way out)."""
    app = LabApp(root=tmp_path, device="cpu", session_name="x")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        app.simulate_key("q")
        app.simulate_key(key)
        await pilot.pause(0.5)
    assert app.return_code == 0


async def test_quitting_while_training_asks_once_and_starts_nothing(corpus, tmp_path):
    app = console(corpus, tmp_path, Study(base=LONG, grid={"seed": (0, 1)}))
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        first = next(iter(app.views.values()))
        await press(pilot, "enter")
        await wait_for(pilot, lambda: first.step >= 3)
        await press(pilot, "q", "ctrl+q")
        assert isinstance(app.screen, ConfirmQuit) and len(app.screen_stack) == 2
        await press(pilot, "y", "enter", "r", "s")  # while the runs are being cancelled
        await wait_for(pilot, lambda: not app.is_running)
    session = Session.open(tmp_path, "test")
    assert [r.status for r in session.runs()] == [RunStatus.CANCELLED, RunStatus.PENDING]
    assert (session.run_dir(first.run_id) / "resume.pt").exists()
    assert not (session.path / "lock").exists()


async def test_nothing_starts_while_another_session_is_opening(corpus, tmp_path):
    """enter while the switch to another session waits for the runs to stop: refused (it
    restarted them, and the switch waited for as long as they trained)."""
    demo_session(tmp_path)
    slow = LONG.replace(batch_size=2048)  # a step of a second or so: enter comes within it
    app = console(corpus, tmp_path, Study(base=slow, grid={"seed": (0, 1)}))
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        first = next(iter(app.views.values()))
        await press(pilot, "enter")
        await wait_for(pilot, lambda: first.step >= 1)
        await choose(pilot, "demo")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmSwitch))
        await press(pilot, "y")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmSwitch))
        assert app.session.name == "test" and app.training  # the runs are being cancelled
        await press(pilot, "enter")
        assert any("demo opens once the runs of test are cancelled" in m for m in messages(app))
        await wait_for(pilot, lambda: app.session.name == "demo", timeout=30)
        assert not app.training
        await pilot.press("q")
    old = Session.open(tmp_path, "test")
    assert [r.status for r in old.runs()] == [RunStatus.CANCELLED, RunStatus.PENDING]


async def test_a_locked_session_given_at_start_opens_read_only(corpus, tmp_path):
    """`labtui --session NAME` of a session another live process writes opens it read-only, as
    the browser does (it was refused with exit 2)."""
    demo_session(tmp_path)
    proc = lock_in_another_process(tmp_path, "demo")
    try:
        session, why = open_for_console(tmp_path, "demo", corpus)
        assert (
            not session.writable
            and why == f"is being written by pid {proc.pid} on " + (why.rsplit(" on ", 1)[1])
        )
        app = LabApp(corpus=corpus, session=session, root=tmp_path, device="cpu", read_only_why=why)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.4)
            assert len(app.views) == 9
            assert any(f"pid {proc.pid}" in m and "opened read-only" in m for m in messages(app))
            await press(pilot, "enter")
            assert app.trainer is None
            await pilot.press("q")
        assert (tmp_path / "demo" / "lock").exists()  # still the other process's
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def unwritable(folder):
    """``folder`` cannot be written, even by root (immutable); skips where that cannot be."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    else:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot make a folder immutable here: {done.stderr.decode().strip()}")
        undo = ["chattr", "-i", str(folder)]
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


async def test_a_session_that_cannot_be_written_opens_read_only(corpus, tmp_path):
    """A session folder on a read-only medium opens read-only (it was refused); e then says in
    one line that its export folder cannot be made."""
    demo_session(tmp_path)
    with unwritable(tmp_path / "demo"):
        session, why = open_for_console(tmp_path, "demo", corpus)
        assert not session.writable and why.startswith("cannot be written (")
        app = LabApp(corpus=corpus, session=session, root=tmp_path, device="cpu", read_only_why=why)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.4)
            assert len(app.views) == 9
            assert f"session demo {why}: opened read-only, as it is now" in messages(app)
            app.action_export()  # what e does
            await wait_for(pilot, lambda: any(m.startswith("Exported CSV:") for m in messages(app)))
            (error,) = [m for m in messages(app) if m.startswith("Exported CSV:")]
            assert str(tmp_path / "demo" / "export") in error and "Errno" not in error
            await pilot.press("q")


async def test_sample_of_a_damaged_checkpoint_says_so(corpus, tmp_path):
    """o on a run whose checkpoint is damaged says so in one line (it showed torch's paragraph
    advising weights_only=False, or nothing at all for an empty file)."""
    from test_app_snapshots import feed

    from sessions.startup import create_session

    spec = TINY.replace(eval_interval=10)
    session = create_session(tmp_path, Study(base=spec, grid={"seed": (0, 1)}), corpus)
    for record in session.runs():
        feed(session, record.run_id, record.spec, spec.iters, "finished")
    garbage, empty = session.run_ids()
    (session.run_dir(garbage) / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (session.run_dir(empty) / "checkpoint.pt").write_bytes(b"")
    app = LabApp(session=session, root=tmp_path, device="cpu")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        for run_id in (garbage, empty):
            app.main_screen.queue.select(run_id)
            await pilot.pause(0.1)
            await pilot.press("o")
            panel = app.screen
            assert isinstance(panel, SamplePanel)
            await app.workers.wait_for_complete()
            await pilot.pause(0.1)
            text = str(panel.query_one("#sample-text").render())
            assert f"checkpoint.pt of run {run_id} cannot be loaded (" in text, text
            assert "\n" not in text and "weights_only" not in text  # one line, not torch's page
            await pilot.press("escape")
        await pilot.press("q")


async def test_new_run_form_takes_enter_at_once_and_refuses_absurd_values(corpus, tmp_path):
    """n then enter adds a run with the form's values; a seed no file system could name is
    refused in the form (it was accepted, and the session could not be opened again)."""
    app = console(corpus, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("n", "enter")
        (view,) = app.views.values()
        assert view.spec.seed == 0 and view.status == RunStatus.PENDING

        await pilot.press("n")
        form = app.screen
        form.query_one("#seed").value = "9" * 300
        form.query_one("#iters").value = str(10**12)
        await pilot.press("enter")
        assert app.screen is form
        assert "seed must be below 2**63" in str(form.query_one("#form-error").render())
        form.query_one("#seed").value = "1"
        await pilot.press("enter")
        assert app.screen is not form
        assert [v.spec.iters for v in app.views.values()] == [TINY.iters, 10**12]
        await pilot.press("q")
    assert len(Session.open(tmp_path, "test").runs()) == 2


async def test_a_damaged_resume_checkpoint_fails_the_run_in_one_line(corpus, tmp_path):
    """r on an interrupted run whose resume.pt is damaged: the run fails with one readable line
    (it was the last line of torch's page on weights_only), and r again starts it over."""
    demo_session(tmp_path)
    session = Session.open(tmp_path, "demo", write=True)
    (record,) = [r for r in session.runs() if r.status == RunStatus.INTERRUPTED]
    (session.run_dir(record.run_id) / "resume.pt").write_bytes(b"not a checkpoint")
    app = LabApp(corpus=corpus, session=session, root=tmp_path, device="cpu")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        view = app.views[record.run_id]
        app.main_screen.queue.select(view.run_id)
        await pilot.pause(0.1)
        await press(pilot, "r")
        await wait_for(pilot, lambda: view.status == RunStatus.FAILED and not app.training)
        (failed,) = [m for m in messages(app) if m.startswith(f"{view.run_id} failed:")]
        assert (
            "resume.pt cannot be loaded (UnpicklingError: the file is damaged or incomplete)"
            in (failed)
        )
        assert "weights_only" not in failed and "moved to resume.pt.broken" in failed
        await press(pilot, "r")  # retried: it starts over, and finishes
        await wait_for(pilot, lambda: view.status == RunStatus.FINISHED)
        assert view.curves["step"][0] == 1 and view.step == view.spec.iters
        await wait_for(pilot, lambda: not app.training)
        await pilot.press("q")


async def test_the_browser_tells_copies_of_a_session_apart(corpus, tmp_path):
    """A session folder copied under another name (its session.json names the original): both
    are listed, by folder, and the copy opens (the browser crashed on the duplicate name)."""
    import shutil

    demo_session(tmp_path)
    shutil.copytree(tmp_path / "demo", tmp_path / "demo-backup")
    app = console(corpus, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await choose(pilot, "demo-backup")
        await wait_for(pilot, lambda: app.session is not None)
        assert app.session.path == tmp_path / "demo-backup" and len(app.views) == 9
        await choose(pilot, "demo-backup")  # the one open here: nothing to do
        await pilot.pause(0.1)
        assert "session demo-backup is the one open here" in messages(app)
        await pilot.press("q")
