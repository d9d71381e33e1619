"""The session browser (b) under Pilot, and `labtui sessions`: the same sessions, study shapes and
best PPL; opening another session while runs train asks first, then cancels them (resumable); a
session another live process writes opens read-only."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from test_app import LONG, add_study, console, press, wait_for
from test_app_snapshots import (  # noqa: F401
    demo_session,
    measured_step_times,
    step_times,
    sweep_session,
)
from typer.testing import CliRunner

from core.spec import Study
from core.status import RunStatus
from labtui.cli import app as cli
from labtui.widgets.browser import SessionBrowser
from labtui.widgets.forms import ConfirmSwitch
from labtui.widgets.results_grid import ResultsGrid
from sessions.listing import list_sessions, study_shape
from sessions.store import Session

pytestmark = pytest.mark.usefixtures("step_times")


def best_ppl(root, name: str) -> str:
    results = Session.open(root, name).results()
    return f"{results.loc[results['status'] == RunStatus.FINISHED, 'val_ppl'].min():.3f}"


async def browse(pilot) -> SessionBrowser:
    """b, and wait for the listing."""
    await press(pilot, "b")
    browser = pilot.app.screen
    assert isinstance(browser, SessionBrowser)
    await wait_for(pilot, lambda: browser.found)
    return browser


async def choose(pilot, name: str, browser: SessionBrowser | None = None) -> None:
    """Put the browser's cursor on session ``name`` and press enter."""
    browser = browser or await browse(pilot)
    table = browser.query_one("DataTable")
    table.move_cursor(row=table.get_row_index(name))
    await pilot.pause(0.05)
    await press(pilot, "enter")


def rows(browser: SessionBrowser) -> dict[str, dict[str, str]]:
    table = browser.query_one("DataTable")
    keys = [c.value for c in table.columns]
    return {r.value: dict(zip(keys, map(str, table.get_row(r)), strict=True)) for r in table.rows}


def lock_in_another_process(root, name: str) -> subprocess.Popen:
    """A live process holding session ``name``'s lock until it is killed."""
    code = (
        "import sys, time; from sessions.store import Session; "
        "s = Session.open(sys.argv[1], sys.argv[2], write=True); print('locked', flush=True); "
        "time.sleep(300)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(root), name], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


async def test_browser_switches_sessions_and_keeps_training_resumable(corpus, tmp_path):
    sweep_session(tmp_path)
    demo_session(tmp_path)
    app = console(corpus, tmp_path, Study(base=LONG, grid={}), base_spec=LONG)
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        (view,) = app.views.values()
        await press(pilot, "enter")
        await wait_for(pilot, lambda: view.step >= 3)

        browser = await browse(pilot)
        shown = rows(browser)
        assert list(shown) == [s.name for s in reversed(list_sessions(tmp_path))]
        assert shown["sweep"]["study"] == "2 variants x 2 seeds x lr(2)"
        assert shown["demo"]["study"] == "3 variants x 3 seeds"
        assert shown["test"]["study"] == "1 variant x 1 seed"
        assert shown["sweep"]["best PPL"] == best_ppl(tmp_path, "sweep")
        assert shown["demo"]["best PPL"] == best_ppl(tmp_path, "demo")
        assert shown["test"]["best PPL"] == "—" and shown["test"]["note"] == "open here"
        assert (shown["demo"]["finished"], shown["demo"]["failed"]) == ("7", "1")
        await choose(pilot, "sweep", browser)

        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmSwitch))  # runs train: asks
        await press(pilot, "n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmSwitch))
        assert app.session.name == "test" and app.training

        await choose(pilot, "sweep")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmSwitch))
        await press(pilot, "y")
        await wait_for(pilot, lambda: app.session.name == "sweep")
        assert not app.training and app.session.writable
        old = Session.open(tmp_path, "test")
        (record,) = old.runs()
        assert record.status == RunStatus.CANCELLED and record.step >= 3
        assert (old.run_dir(record.run_id) / "resume.pt").exists()
        assert not (old.path / "lock").exists()  # released
        await pilot.pause(0.4)
        assert len(app.views) == 8 and app.axes == ["lr"]
        assert app.main_screen.queue.row_count == 8
        assert app.main_screen.query_one(ResultsGrid).row_count == 4 + 8

        await choose(pilot, "test")  # nothing trains now: it opens at once
        await wait_for(pilot, lambda: app.session.name == "test")
        (view,) = app.views.values()
        assert view.status == RunStatus.CANCELLED and len(view.curves["step"]) == record.step
        await press(pilot, "r")  # and it resumes from its checkpoint
        await wait_for(pilot, lambda: view.status == "running" and view.step > record.step)
        assert view.curves["step"][0] == 1
        await press(pilot, "C")
        await wait_for(pilot, lambda: not app.training)
        await pilot.press("q")


async def test_a_session_locked_by_another_process_opens_read_only(corpus, tmp_path):
    demo_session(tmp_path)
    proc = lock_in_another_process(tmp_path, "demo")
    try:
        app = console(corpus, tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            browser = await browse(pilot)
            writer = Session.open(tmp_path, "demo").writer()
            assert writer.startswith(f"pid {proc.pid} on ")
            assert rows(browser)["demo"]["note"] == f"written by {writer}: read-only"
            await choose(pilot, "demo", browser)
            await wait_for(pilot, lambda: app.session is not None)
            assert app.session.name == "demo" and not app.session.writable
            await pilot.pause(0.1)
            assert any("opened read-only" in n.message for n in app._notifications)
            assert "demo (read-only)" in str(app.main_screen.header.render())
            assert len(app.views) == 9

            # its run in flight is the other process's: "running", not "interrupted"
            counts = Counter(v.status for v in app.views.values())
            assert counts == {"finished": 7, "failed": 1, "running": 1}
            failed = next(v for v in app.views.values() if v.status == RunStatus.FAILED)
            app.main_screen.queue.select(failed.run_id)
            await pilot.pause(0.1)
            await press(pilot, "r")  # retry the failed run: refused, nothing trains
            await add_study(pilot)  # add a study: refused
            await pilot.pause(0.1)
            assert len(app.views) == 9 and app.trainer is None
            refused = [n for n in app._notifications if "open read-only" in n.message]
            assert len(refused) == 2 and f"pid {proc.pid}" in refused[0].message

            # b, enter on it again shows it as it is now: here its writer has died meanwhile,
            # so it opens writable and the run that process had in flight reads interrupted
            assert Session.open(tmp_path, "demo").writer() == writer  # never taken from it
            proc.kill()
            proc.wait()
            await choose(pilot, "demo")
            await wait_for(pilot, lambda: app.session.writable)
            counts = Counter(v.status for v in app.views.values())
            assert counts == {"finished": 7, "failed": 1, "interrupted": 1}
            await pilot.press("q")
    finally:
        proc.kill()
        proc.wait()


def test_sessions_command_shows_the_same_study_and_best_ppl(tmp_path):
    sweep_session(tmp_path)
    demo_session(tmp_path)
    done = CliRunner().invoke(cli, ["sessions", "--root", str(tmp_path)], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    lines = {line.split()[0]: line for line in done.output.splitlines() if line.strip()}
    for summary in list_sessions(tmp_path):
        assert summary.study in lines[summary.name]
        assert best_ppl(tmp_path, summary.name) in lines[summary.name]
    assert "2 variants x 2 seeds x lr(2)" in lines["sweep"]


def test_study_shape():
    specs = [LONG.replace(variant=v, seed=s) for v in ("none", "rmsnorm") for s in (0, 1, 2)]
    assert study_shape(specs, []) == "2 variants x 3 seeds"
    lrs = [s.replace(lr=lr) for s in specs[:1] for lr in (1e-3, 1e-2)]
    assert study_shape(lrs, ["lr"]) == "1 variant x 1 seed x lr(2)"
    assert study_shape([], []) == "no runs"
