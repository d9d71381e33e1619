"""Snapshot tests of the console (pytest-textual-snapshot). No training here: the scenes come
from a session folder written from synthetic engine events, and the header's device line from a
fixed DeviceSnapshot, so every pixel is deterministic.

Regenerate after a deliberate change: pytest --snapshot-update tests/test_app_snapshots.py
"""

from __future__ import annotations

import math

import pytest

from conftest import TINY as BASE
from core import events as ev
from core.metrics import stability
from core.spec import RunSpec, Study
from labtui.device_monitor import DeviceSnapshot
from labtui.widgets.results_grid import ResultsGrid

TINY = BASE.replace(iters=40, eval_interval=20, checkpoint_interval=0)
SWEEP = TINY.replace(
    iters=80, eval_interval=40
)  # long enough for spikes (core.metrics.SPIKE_WINDOW)
DATA_LABEL = "input.txt (86c4e6aa)"
CPU = DeviceSnapshot("cpu", "CPU", threads=2, load=0.5, cores=4)


def fixed_device(device: str) -> DeviceSnapshot:
    """The header's device line, the same on every machine."""
    return CPU


def _loss(variant: str, seed: int, step: int) -> float:
    offset = {"none": 0.25, "layernorm": 0.0, "rmsnorm": 0.05}[variant]
    return 1.6 + offset + 2.6 * math.exp(-step / 12) + 0.08 * math.sin(step * (seed + 2))


def feed(session, run_id: str, spec: RunSpec, steps: int, end: str | None) -> None:
    """Record a run's events as the engine would emit them (deterministic numbers)."""
    session.record(ev.RunStarted(run_id, spec, "cpu", "CPU", 26_000))
    norm = 0.4 if spec.variant == "none" else math.sqrt(spec.n_embd)
    for s in range(1, steps + 1):
        loss = _loss(spec.variant, spec.seed, s)
        grad = 1.5 / (1 + s / 8) + 0.1 * math.cos(s)
        session.record(ev.StepLogged(run_id, s, s * 256, loss, grad, norm, 3e-4, 5000.0, s * 0.05))
        if s % spec.eval_interval == 0:
            val = loss + 0.05
            session.record(
                ev.EvalLogged(run_id, s, s * 256, s * 0.05, val, val / math.log(2), math.exp(val))
            )
    if end is None:
        return
    val = _loss(spec.variant, spec.seed, steps) + 0.05
    result = ev.RunResult(
        run_id,
        end,
        steps,
        steps * 256,
        26_000,
        "cpu",
        steps * 0.05,
        val_loss=val if end == "finished" else None,
        val_ppl=math.exp(val) if end == "finished" else None,
        accuracy=0.3 + 0.01 * spec.seed if end == "finished" else None,
        embed_norm=norm if end == "finished" else None,
        error="RuntimeError: out of memory" if end == "failed" else None,
    )
    trace = "Traceback (most recent call last):\n  ...\nRuntimeError: out of memory\n"
    session.record(ev.RunFinished(run_id, result, trace if end == "failed" else None))


def demo_session(root):
    """A closed session: 8 finished runs, one failed at step 10, one interrupted at step 15."""
    from sessions.store import Session

    study = Study(base=TINY, grid={"variant": ("none", "layernorm", "rmsnorm"), "seed": (0, 1, 2)})
    session = Session.create(root, study, name="demo")
    for record in session.runs():
        if record.run_id.endswith("rmsnorm-s2"):
            feed(session, record.run_id, record.spec, 10, "failed")
        elif record.run_id.endswith("layernorm-s2"):
            feed(session, record.run_id, record.spec, 15, None)
        else:
            feed(session, record.run_id, record.spec, 40, "finished")
    session.close()
    return study


def sweep_session(root):
    """A closed lr sweep (none / layernorm x seeds 0, 1 x lr 1e-3, 3e-3): r000 has a loss spike
    at step 65 and a gradient spike at step 70; r007 (layernorm, seed 1, lr 3e-3) diverges at step
    60."""
    from sessions.store import Session

    grid = {"variant": ("none", "layernorm"), "seed": (0, 1), "lr": (1e-3, 3e-3)}
    session = Session.create(root, Study(base=SWEEP, grid=grid), name="sweep")
    for i, record in enumerate(session.runs()):
        run_id, spec = record.run_id, record.spec
        session.record(ev.RunStarted(run_id, spec, "cpu", "CPU", 26_000, precision="fp32"))
        faster = 1.0 if spec.lr == 1e-3 else 0.8
        losses, grads, diverged = [], [], None
        for s in range(1, spec.iters + 1):
            loss = _loss(spec.variant, spec.seed, s) * faster
            grad = 1.5 / (1 + s / 8) + 0.1 * math.cos(s) + 0.05 * i
            if i == 0 and s == 65:
                loss *= 1.8
            if i == 0 and s == 70:
                grad *= 5
            if i == 7 and s >= 60:
                loss = grad = math.nan
                diverged = diverged or s
            losses.append(loss)
            grads.append(grad)
            norm = 0.4 if spec.variant == "none" else math.sqrt(spec.n_embd)
            step = ev.StepLogged(run_id, s, s * 256, loss, grad, norm, spec.lr, 5e3, s * 0.05, 9.0)
            session.record(step)
            if diverged:
                break
        ok = diverged is None
        val = losses[-1] + 0.05
        result = ev.RunResult(
            run_id,
            "finished" if ok else "diverged",
            len(losses),
            len(losses) * 256,
            26_000,
            "cpu",
            len(losses) * 0.05,
            val_loss=val if ok else None,
            val_ppl=math.exp(val) if ok else None,
            accuracy=0.3 + 0.01 * spec.seed + 0.02 * faster if ok else None,
            embed_norm=norm if ok else None,
            max_logit=8.0 + i / 4 if ok else None,
            diverged_step=diverged,
            precision="fp32",
            **stability(losses, grads),
        )
        session.record(ev.RunFinished(run_id, result))
    session.close()


def console(root, make=demo_session, name="demo", **kwargs):
    from labtui.app import LabApp
    from sessions.store import Session

    make(root)
    session = Session.open(root, name, write=True)
    return LabApp(
        session=session,
        root=root,
        base_spec=TINY,
        device="cpu",
        data_label=DATA_LABEL,
        device_snapshot=fixed_device,
        **kwargs,
    )


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()  # the device line
    await pilot.pause()
    pilot.app.redraw()
    await pilot.pause()


@pytest.fixture
def root(tmp_path):
    return tmp_path / "sessions"


@pytest.fixture(scope="session")
def measured_step_times(tmp_path_factory) -> dict:
    """sessions.estimates' cache of step times for every model shape the tests' study choosers
    offer (the built-in studies and TINY, on the CPU), measured for real once per test session."""
    import json
    import os

    from data import cache_root
    from labtui.widgets.chooser import study_choices
    from sessions.estimates import estimate

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("step-times"))
    try:
        for _, study in study_choices(Study(base=TINY), "cpu"):
            estimate(study)
        return json.loads((cache_root() / "step-times.json").read_text())
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


def write_step_times(known: dict) -> None:
    import json

    from data import cache_root

    cache_root().mkdir(parents=True, exist_ok=True)
    (cache_root() / "step-times.json").write_text(json.dumps(known))


@pytest.fixture
def step_times(measured_step_times) -> None:
    """This test's cache holds the measured step times: a chooser estimates at once."""
    write_step_times(measured_step_times)


@pytest.fixture
def fixed_step_times(measured_step_times) -> None:
    """The measured entries with fixed numbers: the same estimates on every machine."""
    fixed = dict(step_s=0.25, eval_batch_s=0.5, measured="2026-01-01T09:00:00", threads=2, load=0.5)
    write_step_times({key: {**value, **fixed} for key, value in measured_step_times.items()})


def test_main_screen_120x40(snap_compare, root):
    """An opened session: queue, curves, gauge and results grid at 120x40."""
    assert snap_compare(console(root), terminal_size=(120, 40), run_before=settle)


def test_main_screen_80x24(snap_compare, root):
    """At 80x24 the panes collapse: narrower queue, one plot, shorter grid."""
    assert snap_compare(console(root), terminal_size=(80, 24), run_before=settle)


def test_too_small(snap_compare, root):
    """Below 80x24 the console says so instead of drawing broken panes."""
    assert snap_compare(console(root), terminal_size=(70, 20), run_before=settle)


def test_grouped_log_smooth(snap_compare, root):
    """g, l, m: one line per variant with its band, log scale, smoothing."""

    async def keys(pilot):
        await pilot.press("g", "l", "m")
        await settle(pilot)

    assert snap_compare(console(root), terminal_size=(120, 40), run_before=keys)


def test_lr_sweep_grid_per_cell_and_spikes(snap_compare, root):
    """An lr sweep: the grid has a row per variant per lr, the queue an lr column, a diverged run
    reads "diverged", and the selected run's loss and gradient spikes are marked (▲)."""

    async def to_the_last_row(pilot):
        await settle(pilot)
        grid = pilot.app.main_screen.query_one(ResultsGrid)
        grid.move_cursor(row=grid.row_count - 1)
        await pilot.pause()

    app = console(root, sweep_session, "sweep")
    assert snap_compare(app, terminal_size=(140, 44), run_before=to_the_last_row)


def test_lr_sweep_80x24(snap_compare, root):
    """The same sweep at 80x24: the queue keeps variant, seed and lr visible."""
    assert snap_compare(
        console(root, sweep_session, "sweep"), terminal_size=(80, 24), run_before=settle
    )


def test_new_run_form_error(snap_compare, tmp_path):
    """The new-run form (at 80x24) shows a bad seed in red, and stays open."""
    from labtui.app import LabApp

    async def keys(pilot):
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("backspace", "t", "w", "o", "enter")  # the seed field has the focus
        await pilot.pause()

    app = LabApp(
        root=tmp_path,
        base_spec=TINY,
        device="cpu",
        session_name="demo",
        data_label=DATA_LABEL,
        device_snapshot=fixed_device,
    )
    assert snap_compare(app, terminal_size=(80, 24), run_before=keys)


def test_help(snap_compare, tmp_path):
    """? lists every key with a sentence."""
    from labtui.app import LabApp

    app = LabApp(
        root=tmp_path,
        base_spec=TINY,
        device="cpu",
        session_name="demo",
        data_label=DATA_LABEL,
        device_snapshot=fixed_device,
    )
    assert snap_compare(app, terminal_size=(120, 40), press=["question_mark"])


# -- the study chooser, the trade-off view, the sample panel, the session browser --------------


def new_console():
    """A console with no session, on the CPU (its chooser offers the built-in studies)."""
    from labtui.app import LabApp

    return LabApp(
        base_spec=TINY,
        device="cpu",
        session_name="demo",
        data_label=DATA_LABEL,
        device_snapshot=fixed_device,
    )


async def open_chooser(pilot):
    await pilot.press("s")
    chooser = pilot.app.screen
    while len(chooser.hows) < len(chooser.choices):  # every estimate filled in
        await pilot.pause(0.05)
    await pilot.pause()


@pytest.mark.usefixtures("fixed_step_times")
def test_study_chooser(snap_compare, tmp_path):
    """s: the built-in studies with purpose, runs and estimated time, and how it was estimated."""
    assert snap_compare(new_console(), terminal_size=(120, 40), run_before=open_chooser)


@pytest.mark.usefixtures("fixed_step_times")
def test_study_chooser_80x24(snap_compare, tmp_path):
    """The chooser at 80x24: the purpose is cut short, runs and estimate stay."""
    assert snap_compare(new_console(), terminal_size=(80, 24), run_before=open_chooser)


async def open_tradeoff(pilot):
    await settle(pilot)
    await pilot.press("w")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_tradeoff_view(snap_compare, root):
    """w on an lr sweep: final PPL per variant against log lr, the diverged cell marked, the
    report's per-cell numbers below."""
    app = console(root, sweep_session, "sweep")
    assert snap_compare(app, terminal_size=(120, 40), run_before=open_tradeoff)


def test_tradeoff_view_80x24(snap_compare, root):
    """The trade-off view at 80x24: the note gives way to the plot."""
    app = console(root, sweep_session, "sweep")
    assert snap_compare(app, terminal_size=(80, 24), run_before=open_tradeoff)


def test_sample_panel_without_a_checkpoint(snap_compare, root):
    """o on a run that saved no checkpoint: the panel says so and when there will be one."""

    async def keys(pilot):
        await settle(pilot)
        await pilot.press("o")
        await pilot.pause()

    assert snap_compare(console(root), terminal_size=(100, 30), run_before=keys)


def fix_created(root, name: str, when: str) -> None:
    """Give a session a fixed creation time (session.json's "created")."""
    import json

    path = root / name / "session.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "created": when}))


def test_session_browser(snap_compare, tmp_path, monkeypatch):
    """b: every session with its study, best PPL and runs per status; the open one marked."""
    monkeypatch.chdir(tmp_path)  # the title shows the root relative to it: "sessions"
    root = tmp_path / "sessions"

    def both(root):
        demo_session(root)
        sweep_session(root)
        fix_created(root, "demo", "2026-01-01T09:00:00+01:00")
        fix_created(root, "sweep", "2026-01-02T10:30:00+01:00")

    async def keys(pilot):
        await settle(pilot)
        await pilot.press("b")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    app = console(root, both, "sweep")
    assert snap_compare(app, terminal_size=(120, 40), run_before=keys)
