"""The console under Pilot, training real tiny runs in its worker thread."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from test_app_snapshots import measured_step_times, step_times, sweep_session  # noqa: F401
from textual.worker import WorkerState

from conftest import TINY as BASE
from core.metrics import GRAD_SPIKE_FACTOR, LOSS_SPIKE_FACTOR, spike_steps
from core.spec import Study
from core.status import RunStatus
from labtui.app import LabApp
from labtui.runview import axis_text, short_id
from labtui.widgets.chooser import StudyChooser
from labtui.widgets.forms import ConfirmQuit, NewRunForm
from labtui.widgets.header import LabHeader
from labtui.widgets.help import TracebackScreen
from labtui.widgets.plots import SPIKE_MARKER, CurvePlot
from labtui.widgets.results_grid import ResultsGrid, num
from labtui.widgets.run_queue import RunQueue

# the study chooser finds its estimates cached: no measurement competes with the training here
pytestmark = pytest.mark.usefixtures("step_times")

TINY = BASE.replace(eval_interval=0, checkpoint_interval=0)
LONG = TINY.replace(iters=100_000)  # never finishes within a test: only cancelled


async def wait_for(pilot, condition, timeout: float = 120.0) -> None:
    """Let the app run until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the console"
        await pilot.pause(0.05)


async def press(pilot, *keys: str) -> None:
    """Press keys while a model trains. Pilot.press also waits for the process to look idle
    (textual._wait.wait_for_idle: at most 1 s, twice per key), which it never does while a
    thread of it trains: that, not the console, made each key take 2 s in these tests."""
    for key in keys:
        pilot.app.simulate_key(key)
        await pilot.pause(0.05)


async def add_study(pilot) -> None:
    """s, then enter in the study chooser: the console's own study (listed first) is added."""
    await pilot.press("s")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, StudyChooser))
    await pilot.press("enter")
    await wait_for(pilot, lambda: not isinstance(pilot.app.screen, StudyChooser))


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
        await pilot.press("s")  # the chooser: the console's study first, then the built-in ones
        assert isinstance(app.screen, StudyChooser)
        await pilot.press("enter")
        assert statuses(app) == ["pending", "pending"]
        await press(pilot, "enter")
        await wait_for(pilot, lambda: "running" in statuses(app))
        # keys are handled while a run trains
        await press(pilot, "l", "x")
        assert app.main_screen.opts.log_y and app.main_screen.opts.x == "tokens"
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

        await press(pilot, "enter")
        await wait_for(pilot, lambda: view.step >= 3)
        await press(pilot, "c")
        await wait_for(pilot, lambda: view.status == "cancelled")
        await wait_for(pilot, lambda: not app.training)
        stopped = view.step
        assert 3 <= stopped < LONG.iters
        record = app.session.run(view.run_id)
        assert record.status == "cancelled"
        assert (app.session.run_dir(view.run_id) / "resume.pt").exists()

        await press(pilot, "r")  # resume: it goes on from the checkpoint
        await wait_for(pilot, lambda: view.status == "running" and view.step > stopped)
        assert view.curves["step"][0] == 1  # earlier steps kept, not restarted
        await press(pilot, "C")
        await wait_for(pilot, lambda: not app.training)
        assert view.status == "cancelled"


async def test_quit_while_training_cancels_and_saves(corpus, tmp_path):
    from sessions.store import Session

    app = console(corpus, tmp_path, Study(base=LONG, grid={}))
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        await press(pilot, "enter")
        await wait_for(pilot, lambda: next(iter(app.views.values())).step >= 2)
        await press(pilot, "q")
        assert isinstance(app.screen, ConfirmQuit)
        await press(pilot, "y")
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
        await add_study(pilot)
        await press(pilot, "enter")
        failed, second = app.views.values()
        await wait_for(pilot, lambda: failed.status == "failed" and second.step >= 1)
        await press(pilot, "C")  # the queue went on; no need to train it to the end
        assert "mps" in failed.error.lower()
        assert any("failed" in n.message for n in app._notifications)
        app.main_screen.query_one(RunQueue).select(failed.run_id)
        await pilot.pause()
        await press(pilot, "t")
        assert isinstance(app.screen, TracebackScreen)
        assert "Traceback" in app.screen.text or "Error" in app.screen.text
        await press(pilot, "escape")
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


async def test_the_queue_is_the_runners(corpus, tmp_path):
    """The console enqueues into and cancels through the runner; its rows show runner.queued."""
    study = Study(base=LONG, grid={"seed": (0, 1, 2)})
    app = console(corpus, tmp_path, study)
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        first, second, third = app.views
        await press(pilot, "enter")
        await wait_for(pilot, lambda: app.views[first].step >= 2)
        runner = app.trainer.runner
        assert runner.active == {first} and runner.queued == [second, third]
        queue = app.main_screen.query_one(RunQueue)

        def status_cell(run_id):
            return str(queue.get_cell(run_id, "status"))

        assert "running" in status_cell(first)
        assert [status_cell(r) for r in (second, third)] == ["… queued", "… queued"]

        queue.select(second)
        await press(pilot, "c")  # a queued run: off the runner's queue, nothing else
        assert runner.queued == [third] and app.views[second].status == RunStatus.PENDING
        await wait_for(pilot, lambda: "pending" in status_cell(second))
        assert app.enqueue([second]) == [second]  # back in, behind the third
        assert app.enqueue([second, third]) == []  # queued already: nothing added
        assert runner.queued == [third, second]

        await press(pilot, "C")
        await wait_for(pilot, lambda: not app.training)
        assert runner.queued == [] and runner.active == set()
        assert app.views[first].status == RunStatus.CANCELLED
        assert [app.views[r].status for r in (second, third)] == ["pending", "pending"]
        assert "pending" in status_cell(third)


async def test_engine_events_are_applied_in_batches(corpus, tmp_path, monkeypatch):
    """A training step costs no Textual message: the training thread posts none (events wait in
    a buffer for the redraw timer), and the UI's own messages are far fewer than the steps."""
    import threading

    from textual.message_pump import MessagePump

    posted = []
    original = MessagePump.post_message

    def counting(self, message):  # from any thread (Pilot's message_hook sees the UI thread's)
        posted.append((type(message).__name__, threading.current_thread().name))
        return original(self, message)

    monkeypatch.setattr(MessagePump, "post_message", counting)
    app = console(corpus, tmp_path, Study(base=LONG, grid={}))
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        await press(pilot, "enter")
        (view,) = app.views.values()
        await wait_for(pilot, lambda: view.step >= 5)
        posted.clear()
        start = view.step
        while view.step < start + 300:  # no Pilot here: its pause posts messages of its own
            await asyncio.sleep(0.05)
        steps, during = view.step - start, list(posted)
        await press(pilot, "C")
        await wait_for(pilot, lambda: not app.training)
    from_training = [name for name, thread in during if thread != "MainThread"]
    assert from_training == [], from_training
    assert len(during) / steps < 1, f"{len(during)} messages for {steps} steps"


async def test_a_session_that_cannot_be_written_stops_training_cleanly(corpus, tmp_path):
    """A write failure under the session (here a directory where resume.pt must go) stops the
    drain with SinkError: one clear notification, the queue emptied, the console still works."""
    spec = LONG.replace(checkpoint_interval=1000)  # not reached before the folder is made
    app = console(corpus, tmp_path, Study(base=spec, grid={"seed": (0, 1)}))
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        first, second = app.views.values()
        await press(pilot, "enter")
        await wait_for(pilot, lambda: first.status == "running")
        (app.session.run_dir(first.run_id) / "resume.pt").mkdir()
        await wait_for(pilot, lambda: not app.training)
        messages = [n.message for n in app._notifications]
        assert any("cannot write session test" in m and "resume.pt" in m for m in messages)
        assert app.trainer.runner.queued == [] and second.status == "pending"
        await pilot.press("l")  # the console goes on
        assert app.main_screen.opts.log_y
        path = app.session.path
        await pilot.press("q")
    assert not (path / "lock").exists()


async def test_results_grid_agrees_with_the_report_per_lr_cell(tmp_path):
    """Every number of the grid (per cell of the lr sweep) is the report's."""
    from sessions.report import write_report
    from sessions.store import Session

    sweep_session(tmp_path)
    session = Session.open(tmp_path, "sweep", write=True)
    app = LabApp(session=session, root=tmp_path, device="cpu")
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.pause(0.4)
        grid = app.main_screen.query_one(ResultsGrid)
        rows = [{c.value: str(grid.get_cell(r, c)) for c in grid.columns} for r in list(grid.rows)]
        report = write_report(session)
        await pilot.press("q")

    assert report.axes == ["lr"] and grid.axes == ["lr"]
    means = [r for r in rows if r["run"] == "mean"]
    summary = report.summary.set_index(["lr", "variant", "metric"])
    comparison = report.comparison.set_index(["lr", "variant", "metric"])
    cells = sorted({(lr, v) for lr, v, _ in summary.index})
    assert sorted((float(r["lr"]), r["variant"]) for r in means) == cells  # one row per cell
    for row in means:
        lr, variant = float(row["lr"]), row["variant"]
        ppl = summary.loc[(lr, variant, "val_ppl")]
        assert row["n"].startswith(f"n={ppl['n']}")
        assert row["ppl"] == num(ppl["mean"])
        assert row["ci"] == f"[{num(ppl['ci_low'])}, {num(ppl['ci_high'])}]"
        assert row["acc"] == num(summary.loc[(lr, variant, "accuracy")]["mean"])
        assert row["norm"] == num(summary.loc[(lr, variant, "embed_norm")]["mean"], 2)
        if variant == report.baseline:
            assert row["delta"] == "baseline"
            continue
        c = comparison.loc[(lr, variant, "val_ppl")]
        assert row["delta"] == f"{c['mean_diff']:+.3f} ({c['rel_change_pct']:+.1f}%)"
        p = c["p_value"]
        assert row["p"] == (f"{p:.3g}" if math.isfinite(p) else "—")
    assert sum("diverged" in r["n"] for r in means) == 1

    results = report.results.set_index("run_id")
    run_rows = [r for r in rows if r["run"] != "mean"]
    assert len(run_rows) == len(results)
    for row, (run_id, result) in zip(run_rows, results.iterrows(), strict=True):
        assert row["run"] == short_id(run_id) and row["lr"] == axis_text(result["lr"])
        if result["status"] == RunStatus.DIVERGED:
            assert row["ppl"] == "diverged"
        else:
            assert row["ppl"] == num(result["val_ppl"])
        assert row["grad"] == num(result["max_grad_norm"], 2)
        assert row["spikes"] == f"{int(result['loss_spikes'])}/{int(result['grad_spikes'])}"
    assert "diverged" in {r["ppl"] for r in run_rows}


async def test_spikes_are_marked_on_the_loss_and_grad_plots(tmp_path):
    """The selected run's spikes, by core.metrics.spike_steps, get a mark on each plot."""
    from sessions.store import Session

    sweep_session(tmp_path)
    session = Session.open(tmp_path, "sweep", write=True)
    app = LabApp(session=session, root=tmp_path, device="cpu")
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.pause(0.4)
        view = app.views[app.selected]
        metrics = session.metrics(view.run_id)
        marked = {}
        for plot in app.main_screen.query(CurvePlot):
            factor = {"loss": LOSS_SPIKE_FACTOR, "grad_norm": GRAD_SPIKE_FACTOR}[plot.metric]
            expected = [i + 1 for i in spike_steps(list(metrics[plot.metric]), factor)]
            marked[plot.metric] = [int(x) for x in plot.marks[0]]
            assert marked[plot.metric] == expected
            assert SPIKE_MARKER in str(plot.render())
        assert marked == {"loss": [65], "grad_norm": [70]}

        app.main_screen.query_one(RunQueue).select(next(r for r in app.views if r != view.run_id))
        await pilot.pause(0.2)
        assert all(len(plot.marks[0]) == 0 for plot in app.main_screen.query(CurvePlot))
        await pilot.press("q")


async def test_export_runs_in_a_worker_and_writes_atomically(tmp_path):
    """e writes the CLI's CSV (sessions.export) in a worker; an old file is replaced whole."""
    from sessions.export import EXPORTS, csv_text
    from sessions.store import Session

    sweep_session(tmp_path)
    session = Session.open(tmp_path, "sweep", write=True)
    out = session.path / "export"
    out.mkdir()
    old = out / "results.csv"
    old.write_text("old\n")
    old_inode = old.stat().st_ino
    app = LabApp(session=session, root=tmp_path, device="cpu")
    async with app.run_test(size=(120, 40)) as pilot:
        app.action_export()  # what e does
        (worker,) = [w for w in app.workers if w.group == "export"]
        await app.workers.wait_for_complete([worker])
        await pilot.pause()
        assert worker.state == WorkerState.SUCCESS
        for what in EXPORTS:
            assert (out / f"{what}.csv").read_text() == csv_text(session, what)[0]
        assert old.stat().st_ino != old_inode  # renamed over, not rewritten in place
        assert sorted(p.name for p in out.iterdir()) == sorted(f"{w}.csv" for w in EXPORTS)
        assert any(str(out / "metrics.csv") in n.message for n in app._notifications)
        await pilot.press("q")


async def test_header_shows_the_device_from_the_monitor(tmp_path):
    """The header's device line is labtui.device_monitor's, sampled in a worker."""
    from labtui.device_monitor import format_line, snapshot

    app = LabApp(root=tmp_path, device="cpu", session_name="dev")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause(0.4)
        header = app.main_screen.query_one(LabHeader)
        assert header.snapshot is not None and header.snapshot.threads >= 1
        assert format_line(header.snapshot) in str(header.render())
        line = format_line(snapshot("cpu")).split(" · load")[0]  # "CPU · N threads"
        assert line in str(header.render())
        await pilot.press("q")
