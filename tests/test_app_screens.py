"""The console's other screens under Pilot: the study chooser (s), the trade-off view (w) and the
sample panel (o), each over real session files and real tiny training."""

from __future__ import annotations

import math

import pytest
from test_app import LONG, TINY, add_study, console, press, statuses, wait_for
from test_app_snapshots import measured_step_times, step_times, sweep_session  # noqa: F401

from core.presets import load_preset
from core.spec import Study
from core.status import DONE, RunStatus
from labtui.app import LabApp
from labtui.plotting import format_duration
from labtui.widgets.chooser import StudyChooser, study_choices
from labtui.widgets.sample import SAMPLE_TOKENS, SamplePanel
from labtui.widgets.tradeoff import DIVERGED_MARK, TradeoffPlot, TradeoffScreen, cell_rows

pytestmark = pytest.mark.usefixtures("step_times")

# a tiny lr sweep: 1e3 diverges within a few steps, the others finish
SWEEP = Study(
    base=TINY.replace(iters=30, checkpoint_interval=10),
    grid={"variant": ("none", "layernorm"), "seed": (0,), "lr": (1e-3, 1e3)},
)


def chooser_rows(chooser: StudyChooser) -> dict[str, list[str]]:
    table = chooser.query_one("DataTable")
    return {r.value: [str(c) for c in table.get_row(r)] for r in table.rows}


async def test_chooser_measures_in_a_worker_and_s_enter_enter_trains_the_protocol(corpus, tmp_path):
    """With nothing cached, the first estimate measures in a worker while the chooser answers
    keys; every study gets its estimate and its `how`; enter queues the highlighted study on the
    console's device, and s, enter, enter starts the protocol."""
    from data import cache_root
    from sessions.estimates import estimate

    (cache_root() / "step-times.json").unlink()
    app = LabApp(corpus=corpus, root=tmp_path, device="cpu", session_name="s")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        chooser = app.screen
        assert isinstance(chooser, StudyChooser)
        names = list(chooser_rows(chooser))
        assert names == ["protocol", "budget-sweep", "controls", "lr-sweep"]
        assert chooser_rows(chooser)["protocol"][3] == "…"  # not measured yet: the UI is up
        await press(pilot, "down")  # keys are handled while it measures
        assert chooser.highlighted == "budget-sweep"
        await wait_for(pilot, lambda: len(chooser.hows) == len(names), timeout=300)
        await press(pilot, "up")
        for name, row in chooser_rows(chooser).items():
            study = chooser.choices[name]
            assert study.base.device == "cpu"
            guess = estimate(study)  # cached now: the same numbers
            assert row[2] == f"{guess.runs:,}" and row[3] == f"~{format_duration(guess.seconds)}"
            assert chooser.hows[name] == guess.how
        how = str(chooser.query_one("#estimate-how").render())
        assert "estimate (protocol)" in how and "ms per step" in how and "CPU" in how

        await press(pilot, "enter")  # the protocol, highlighted first
        assert not isinstance(app.screen, StudyChooser)
        protocol = load_preset("protocol")
        assert [v.spec for v in app.views.values()] == [
            s.replace(device="cpu", precision="fp32") for s in protocol.specs()
        ]
        await press(pilot, "enter")  # start
        await wait_for(pilot, lambda: "running" in statuses(app))
        await press(pilot, "C")
        await wait_for(pilot, lambda: not app.training)
        await press(pilot, "s")
        assert isinstance(app.screen, StudyChooser)
        await press(pilot, "escape")  # closes, adds nothing
        assert not isinstance(app.screen, StudyChooser) and len(app.views) == 15
        await pilot.press("q")


def test_study_choices_put_the_consoles_own_study_first():
    given = Study(base=TINY)
    choices = study_choices(given, "cuda")
    assert choices[0] == ("custom", given)
    assert [n for n, _ in choices[1:]] == ["protocol", "budget-sweep", "controls", "lr-sweep"]
    for name, study in choices[1:]:
        preset = load_preset(name)
        assert study.base == preset.base.replace(device="cuda") and study.grid == preset.grid
    assert study_choices(None, "cpu")[0][0] == "protocol"


async def test_tradeoff_view_fills_in_live_and_agrees_with_the_report(corpus, tmp_path):
    """w while an lr sweep trains: the view's table is core.tradeoff.sweep_table's, refreshed as
    runs end, and every number it prints is the report's; diverged cells are marked."""
    from sessions.report import sweep_cell_rows, write_report

    app = console(corpus, tmp_path, SWEEP, base_spec=SWEEP.base)
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        await press(pilot, "enter")
        await wait_for(pilot, lambda: "running" in statuses(app))
        await press(pilot, "w")
        view = app.screen
        assert isinstance(view, TradeoffScreen) and view.axis == "lr"
        await wait_for(pilot, lambda: view.sweep is not None)
        await wait_for(pilot, lambda: not app.training)
        assert all(v.status in DONE for v in app.views.values())
        await wait_for(pilot, lambda: view.sweep.waiting == 0)  # refreshed as the runs ended
        table = view.query_one("DataTable")
        shown = [[str(c) for c in table.get_row(r)] for r in table.rows]
        assert view.sweep.note  # where the loss at initialization came from

        report = write_report(app.session)
        (sweep,) = report.sweeps
        head, rows = sweep_cell_rows(sweep)
        keep = [head.index(c) for c in ("lr", "variant", "done", "diverged", "spiked")]
        keep += [head.index(c) for c in ("final PPL", "PPL (finished)", "95% CI")]
        assert shown == [[row[i] for i in keep] for row in rows]
        assert shown == cell_rows(view.sweep)
        assert report.init_note == view.sweep.note
        diverged = view.sweep.table[view.sweep.table["n_diverged"] > 0]
        assert list(diverged["lr"]) == [1e3, 1e3]
        assert all(math.isclose(p, math.exp(view.sweep.loss0)) for p in diverged["final_ppl"])
        plot = str(view.query_one(TradeoffPlot).render())
        assert f"{DIVERGED_MARK}2" in plot  # both variants diverged at lr 1e3: one mark, 2 runs
        assert "log x" in plot

        await press(pilot, "l")
        assert view.log_y and "log y" in str(view.query_one(TradeoffPlot).render())
        await press(pilot, "escape")
        assert app.screen is app.main_screen
        await pilot.press("q")


async def test_tradeoff_needs_a_swept_axis(corpus, tmp_path):
    app = console(corpus, tmp_path, Study(base=TINY, grid={"seed": (0, 1)}))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("w")
        assert any("no session yet" in n.message for n in app._notifications)
        await add_study(pilot)
        await pilot.press("w")
        assert app.screen is app.main_screen
        assert any("sweeps nothing but variant and seed" in n.message for n in app._notifications)
        await pilot.press("q")


async def test_tradeoff_of_an_opened_session_at_80x24(tmp_path):
    """An old session: the view draws at once from its folder, the axis value per cell."""
    from sessions.store import Session

    sweep_session(tmp_path)
    app = LabApp(session=Session.open(tmp_path, "sweep", write=True), root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("w")
        view = app.screen
        await wait_for(pilot, lambda: view.sweep is not None)
        assert view.has_class("-compact")
        assert sorted(set(view.sweep.table["lr"])) == [1e-3, 3e-3]
        assert int(view.sweep.table["n_diverged"].sum()) == 1
        await pilot.press("a")  # a single axis: stays
        assert view.axis == "lr"
        await pilot.press("w")
        assert app.screen is app.main_screen
        await pilot.press("q")


async def test_sample_panel_while_training_and_without_a_checkpoint(corpus, tmp_path):
    """o on the training run: its latest checkpoint is sampled on the CPU in a worker while it
    goes on training; o on a run without a checkpoint says so."""
    from sessions.samples import sample_run

    spec = LONG.replace(checkpoint_interval=25)
    app = console(corpus, tmp_path, Study(base=spec, grid={"seed": (0, 1)}), base_spec=spec)
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        first, second = app.views.values()
        await press(pilot, "enter")
        await wait_for(pilot, lambda: first.step >= 60)
        app.main_screen.queue.select(first.run_id)
        await press(pilot, "o")
        panel = app.screen
        assert isinstance(panel, SamplePanel)
        await wait_for(pilot, lambda: panel.sample is not None)
        sample = panel.sample
        assert sample.run_id == first.run_id and sample.checkpoint == "resume.pt"
        assert sample.step >= 50 and len(sample.text) == SAMPLE_TOKENS
        assert sample.text in str(panel.query_one("#sample-text").render())
        step = first.step
        await wait_for(pilot, lambda: first.step > step + 20)  # training went on
        assert first.status == RunStatus.RUNNING

        await press(pilot, "n")  # another sampling seed, another text
        await wait_for(pilot, lambda: panel.sample is not sample)
        assert panel.seed == 1 and panel.sample.text != sample.text
        await press(pilot, "escape")
        assert not isinstance(app.screen, SamplePanel)

        app.main_screen.queue.select(second.run_id)  # queued: no checkpoint yet
        await pilot.pause(0.1)
        await press(pilot, "o")
        message = str(app.screen.query_one("#sample-text").render())
        assert f"{second.run_id} has no checkpoint yet" in message
        assert "every 25 steps" in message
        await press(pilot, "escape")
        await press(pilot, "C")
        await wait_for(pilot, lambda: not app.training)

        # the same checkpoint and seed, drawn again: the same text
        again = sample_run(app.session, first.run_id, tokens=SAMPLE_TOKENS, checkpoint="latest")
        app.main_screen.queue.select(first.run_id)
        await pilot.pause(0.1)
        await pilot.press("o")
        panel = app.screen
        await wait_for(pilot, lambda: panel.sample is not None)
        assert panel.sample.text == again.text and panel.sample.step == again.step
        await pilot.press("escape", "q")
