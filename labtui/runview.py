"""The console's picture of each run: status, progress, curves. Built from engine events live,
or from the session folder when an old session is opened (the same picture either way).

No Textual here: the widgets read these objects, the app feeds them events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from core import events as ev
from core.spec import RunSpec
from core.status import DONE, RunStatus
from labtui.errors import error_line
from sessions.errors import SessionError

CURVES = ("step", "tokens", "elapsed_s", "loss", "grad_norm", "embed_norm")
EVAL_CURVES = ("step", "tokens", "elapsed_s", "val_loss", "val_ppl")


def _columns(names) -> dict[str, list[float]]:
    return {k: [] for k in names}


@dataclass
class RunView:
    run_id: str
    spec: RunSpec
    status: RunStatus = RunStatus.PENDING
    step: int = 0
    result: ev.RunResult | None = None
    error: str | None = None  # traceback of a failed run
    generation: int = 0  # bumped whenever the curves are cut back (a resumed run)
    curves: dict[str, list[float]] = field(default_factory=lambda: _columns(CURVES))
    evals: dict[str, list[float]] = field(default_factory=lambda: _columns(EVAL_CURVES))

    @property
    def variant(self) -> str:
        return self.spec.variant

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.spec.iters)

    @property
    def val_ppl(self) -> float | None:
        if self.result is not None and self.result.val_ppl is not None:
            return self.result.val_ppl
        return self.evals["val_ppl"][-1] if self.evals["val_ppl"] else None

    @property
    def embed_norm(self) -> float | None:
        """The latest training-batch first-block input norm (the result's, once finished)."""
        if self.curves["embed_norm"]:
            return self.curves["embed_norm"][-1]
        return self.result.embed_norm if self.result is not None else None

    def apply(self, event: object) -> None:
        """Update from one engine event."""
        if isinstance(event, ev.RunStarted):
            self.status, self.step = RunStatus.RUNNING, event.start_step
            self.error = self.result = None
            self._truncate(event.start_step)  # a resumed run repeats the steps after its checkpoint
            self.generation += 1
        elif isinstance(event, ev.StepLogged):
            self.step = event.step
            for name in CURVES:
                self.curves[name].append(getattr(event, name))
        elif isinstance(event, ev.EvalLogged):
            for name in EVAL_CURVES:
                self.evals[name].append(getattr(event, name))
        elif isinstance(event, ev.RunFinished):
            self.result = event.result
            self.status = RunStatus(event.result.status)
            self.step = max(self.step, event.result.step)
            self.error = event.traceback or event.result.error

    def _truncate(self, step: int) -> None:
        for table in (self.curves, self.evals):
            keep = sum(1 for s in table["step"] if s <= step)
            for values in table.values():
                del values[keep:]

    @classmethod
    def from_record(cls, record, metrics: pd.DataFrame | None, evals: pd.DataFrame | None):
        """Rebuild a run's view from a sessions.store.RunRecord and its logged curves."""
        view = cls(record.run_id, record.spec, record.status, record.step, record.result)
        view.error = record.error
        for table, frame, names in (
            (view.curves, metrics, CURVES),
            (view.evals, evals, EVAL_CURVES),
        ):
            if frame is None or frame.empty:
                continue
            for name in names:
                if name in frame.columns:
                    table[name] = [float(v) for v in frame[name]]
                else:
                    table[name] = [math.nan] * len(frame)
        if view.curves["step"]:
            view.step = max(view.step, int(view.curves["step"][-1]))
        return view


class RunViews(dict[str, RunView]):
    """Every run's view by run id, and what changed since the screen last showed them."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: set[str] = set()  # runs whose queue row is out of date
        self.curves_changed = False
        self.results_changed = False

    def load(self, session) -> list[str]:
        """Add a view of each run of ``session`` not shown yet, rebuilt from its folder.

        Returns why the curves of some runs cannot be read (a damaged metrics.csv or evals.csv,
        one line each): those runs are shown without curves, the others as usual.
        """
        broken = []
        for record in session.runs():
            if record.run_id not in self:
                try:
                    metrics, evals = session.metrics(record.run_id), session.evals(record.run_id)
                except (SessionError, OSError) as err:
                    metrics = evals = None
                    broken.append(error_line(err))
                self[record.run_id] = RunView.from_record(record, metrics, evals)
                self.changed.add(record.run_id)
        self.curves_changed = self.results_changed = True
        return broken

    def settle(self, session) -> None:
        """Runs shown as running that the session no longer trains (the drain stopped on an
        error, before their end was written) take the status their folder now says."""
        for view in self.values():
            if view.status == RunStatus.RUNNING:
                record = session.run(view.run_id)
                view.status, view.step = record.status, record.step
                self.changed.add(view.run_id)

    def apply(self, events: list[object]) -> tuple[int, list[object]]:
        """Apply engine events in order; returns the number of steps among them and the
        RunStarted and RunFinished events (the ones worth telling the user about)."""
        steps, news = 0, []
        for event in events:
            view = self.get(event.run_id)
            if view is None or isinstance(event, ev.CheckpointSaved):
                continue
            view.apply(event)
            self.changed.add(view.run_id)
            self.curves_changed = True
            if isinstance(event, ev.StepLogged):
                steps += 1
            elif isinstance(event, ev.RunStarted | ev.RunFinished):
                news.append(event)
                self.results_changed |= isinstance(event, ev.RunFinished)
        return steps, news


def overall_progress(views) -> tuple[int, int]:
    """(steps done, steps in all) over the runs that are to be trained or were trained."""
    done = total = 0
    for v in views:
        total += v.spec.iters
        done += v.spec.iters if v.status in DONE else min(v.step, v.spec.iters)
    return done, total


def short_id(run_id: str) -> str:
    """ "r007" of "r007-layernorm-s1-lr0.003": what is left when variant, seed and the swept
    values have columns of their own (sessions.paths.run_id_for builds the ids)."""
    return run_id.split("-", 1)[0]


def axis_text(value: object) -> str:
    """A swept value as a cell: floats short (1e-3 -> "0.001"), anything else as is."""
    return f"{value:g}" if isinstance(value, float) else str(value)
