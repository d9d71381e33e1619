"""The console under Pilot, training real tiny runs in its worker thread."""

from __future__ import annotations

import time

import pytest

from conftest import TINY as BASE
from core.spec import Study
from labtui.app import LabApp
from labtui.widgets.forms import ConfirmQuit, NewRunForm
from labtui.widgets.help import TracebackScreen
from labtui.widgets.results_grid import ResultsGrid
from labtui.widgets.run_queue import RunQueue

TINY = BASE.replace(eval_interval=0, checkpoint_interval=0)
LONG = TINY.replace(iters=100_000)  # never finishes within a test: only cancelled


async def wait_for(pilot, condition, timeout: float = 120.0) -> None:
    """Let the app run until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the console"
        await pilot.pause(0.05)


def console(corpus, root, study: Study | None = None, **kwargs) -> LabApp:
    base = kwargs.pop("base_spec", TINY)
    return LabApp(
        corpus=corpus,
        root=root,
        base_spec=base,
        study=study or Study(base=base),
        device=kwargs.pop("device", "cpu"),
        session_name="test",
        **kwargs,
    )


def statuses(app: LabApp) -> list[str]:
    return [v.status for v in app.views.values()]


async def test_study_trains_by_keyboard_and_fills_results(corpus, tmp_path):
    # long enough (a few seconds a run) that the keys below surely land while a run trains
    study = Study(
        base=TINY.replace(iters=1500), grid={"variant": ("none", "layernorm"), "seed": (0,)}
    )
    app = console(corpus, tmp_path, study)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        assert statuses(app) == ["pending", "pending"]
        await pilot.press("enter")
        await wait_for(pilot, lambda: "running" in statuses(app))
        # keys are handled while a run trains
        await pilot.press("l", "x")
        assert app.opts.log_y and app.opts.x == "tokens"
        assert "running" in statuses(app)
        await wait_for(pilot, lambda: statuses(app) == ["finished", "finished"])
        await wait_for(pilot, lambda: not app.training)
        await pilot.pause(0.4)  # one redraw tick

        assert all(len(v.curves["loss"]) == 1500 and v.val_ppl for v in app.views.values())
        grid = app.main_screen.query_one(ResultsGrid)
        assert grid.row_count == 4  # a mean row per variant, then one row per run
        queue = app.main_screen.query_one(RunQueue)
        assert queue.row_count == 2
        assert set(app.session.results()["status"]) == {"finished"}

        await pilot.press("e")
        export = app.session.path / "export"
        for name in ("results", "metrics", "evals"):
            assert (export / f"{name}.csv").stat().st_size > 0
        assert len((export / "metrics.csv").read_text().splitlines()) == 3001

        path = app.session.path
        await pilot.press("q")  # nothing training: quits at once
    assert not (path / "lock").exists()


async def test_new_run_form_adds_a_run_then_cancel_and_resume(corpus, tmp_path):
    app = console(corpus, tmp_path, base_spec=LONG)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("n")
        assert isinstance(app.screen, NewRunForm)
        app.screen.query_one("#seed").value = "7"
        app.screen.query_one("#iters").focus()
        await pilot.press("enter")
        assert not isinstance(app.screen, NewRunForm)
        (view,) = app.views.values()
        assert view.spec.seed == 7 and view.status == "pending"

        await pilot.press("enter")
        await wait_for(pilot, lambda: view.step >= 3)
        await pilot.press("c")
        await wait_for(pilot, lambda: view.status == "cancelled")
        await wait_for(pilot, lambda: not app.training)
        stopped = view.step
        assert 3 <= stopped < LONG.iters
        record = app.session.run(view.run_id)
        assert record.status == "cancelled"
        assert (app.session.run_dir(view.run_id) / "resume.pt").exists()

        await pilot.press("r")  # resume: it goes on from the checkpoint
        await wait_for(pilot, lambda: view.status == "running" and view.step > stopped)
        assert view.curves["step"][0] == 1  # earlier steps kept, not restarted
        await pilot.press("C")
        await wait_for(pilot, lambda: not app.training)
        assert view.status == "cancelled"


async def test_quit_while_training_cancels_and_saves(corpus, tmp_path):
    from sessions.store import Session

    app = console(corpus, tmp_path, Study(base=LONG, grid={}))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s", "enter")
        await wait_for(pilot, lambda: next(iter(app.views.values())).step >= 2)
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.training)
        await pilot.pause(0.2)
    session = Session.open(tmp_path, "test")
    (record,) = session.runs()
    assert record.status == "cancelled" and record.step >= 2
    assert (session.run_dir(record.run_id) / "resume.pt").exists()
    assert not (session.path / "lock").exists()  # closed cleanly


async def test_form_rejects_bad_input(tmp_path):
    app = console(None, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        form = app.screen
        error = form.query_one("#form-error")
        for field, text, message in (
            ("seed", "two", "seed must be a whole number"),
            ("seed", "-1", "seed must be non-negative"),
            ("iters", "0", "iters must be positive"),
            ("lr", "fast", "lr must be a number"),
        ):
            form.query_one(f"#{field}").value = text
            form.query_one(f"#{field}").focus()
            await pilot.press("enter")
            assert app.screen is form
            assert message in str(error.render())
            form.query_one(f"#{field}").value = {"seed": "0", "iters": "9", "lr": "1e-3"}[field]
        await pilot.press("enter")
        assert app.screen is not form
        (view,) = app.views.values()
        assert (view.spec.iters, view.spec.lr) == (9, 1e-3)


@pytest.mark.skipif(
    __import__("torch").backends.mps.is_available(), reason="needs a machine without MPS"
)
async def test_failed_run_shows_error_and_queue_goes_on(corpus, tmp_path):
    study = Study(base=TINY, grid={"device": ("mps", "cpu")})  # mps fails on this machine
    app = console(corpus, tmp_path, study, device="auto")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s", "enter")
        failed, second = app.views.values()
        await wait_for(pilot, lambda: failed.status == "failed" and second.step >= 1)
        await pilot.press("C")  # the queue went on; no need to train it to the end
        assert "mps" in failed.error.lower()
        assert any("failed" in n.message for n in app._notifications)
        app.main_screen.query_one(RunQueue).select(failed.run_id)
        await pilot.pause()
        await pilot.press("t")
        assert isinstance(app.screen, TracebackScreen)
        assert "Traceback" in app.screen.text or "Error" in app.screen.text
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.training)


async def test_opening_a_session_rebuilds_the_picture(tmp_path):
    from test_app_snapshots import TINY as DEMO_SPEC
    from test_app_snapshots import demo_session

    from sessions.store import Session

    demo_session(tmp_path)
    session = Session.open(tmp_path, "demo", write=True)
    app = LabApp(session=session, root=tmp_path, base_spec=DEMO_SPEC, device="cpu")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.4)
        assert statuses(app).count("finished") == 7
        assert "failed" in statuses(app) and "interrupted" in statuses(app)
        for view in app.views.values():
            assert len(view.curves["loss"]) == len(session.metrics(view.run_id))
        assert app.main_screen.query_one(ResultsGrid).row_count == 3 + 7
        interrupted = next(v for v in app.views.values() if v.status == "interrupted")
        assert interrupted.step == 15
        await pilot.press("q")
