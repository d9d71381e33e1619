"""The files a run's training writes into its folder, written from engine events.

Only the process holding the session's lock writes. metrics.csv and evals.csv get one flushed line
per event and stay open while their run trains; every other file is replaced whole (atomic). A
write that fails raises atomic.WriteError naming the file; what is on disk stays readable (a cut
last row is dropped by every reader, a replaced file is the old one or the new one).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.events import CheckpointSaved, EvalLogged, Event, RunFinished, RunStarted, StepLogged
from core.spec import RunSpec
from core.status import DONE
from sessions import atomic
from sessions.records import step_of
from sessions.tables import EVAL_COLUMNS, METRIC_COLUMNS


class EventWriter:
    """Writes engine events into the run folders under ``runs``.

    ``live`` maps each run being recorded now to its last step; ``spec_of`` gives a run's spec
    (saved beside its result).
    """

    def __init__(self, runs: Path, spec_of: Callable[[str], RunSpec]):
        self.runs = runs
        self.live: dict[str, int] = {}
        self._spec_of = spec_of
        self._files: dict[tuple[str, str], io.TextIOBase] = {}

    def write(self, event: Event) -> None:
        """Write one engine event into its run's folder."""
        match event:
            case StepLogged():
                self.live[event.run_id] = event.step
                values = [getattr(event, c) for c in METRIC_COLUMNS]
                self._append(event.run_id, "metrics.csv", METRIC_COLUMNS, values)
            case EvalLogged():
                values = [getattr(event, c) for c in EVAL_COLUMNS]
                self._append(event.run_id, "evals.csv", EVAL_COLUMNS, values)
            case CheckpointSaved():
                import torch

                name = "checkpoint.pt" if event.final else "resume.pt"
                data = io.BytesIO()  # serialized first: a failed write then has a plain errno
                torch.save(event.state, data)
                atomic.write_bytes(self.runs / event.run_id / name, data.getbuffer())
            case RunStarted():
                self.prepare(event.run_id, event.spec)
                self.live[event.run_id] = event.start_step
            case RunFinished():
                self._finish(event)
            case _:
                raise TypeError(f"not an engine event: {event!r}")

    def prepare(self, run_id: str, spec: RunSpec) -> None:
        """Create a run's folder with its spec.json, if not there yet (run folders are made when
        their run starts, not when the session is created)."""
        folder = self.runs / run_id
        with atomic.writing(folder):
            folder.mkdir(exist_ok=True)
        if not (folder / "spec.json").exists():
            atomic.write_json(folder / "spec.json", spec.to_dict())

    def rewind(self, run_id: str, step: int) -> None:
        """Cut a run back to its resumable state at ``step``: CSV rows after it and its end go."""
        for name, header in (("metrics.csv", METRIC_COLUMNS), ("evals.csv", EVAL_COLUMNS)):
            self._truncate(run_id, name, header, step)
        folder = self.runs / run_id
        atomic.remove(folder / "result.json", folder / "error.txt")

    def clear(self, run_id: str) -> None:
        """Remove everything a run's training wrote, so that it starts over."""
        self.close(run_id)
        folder = self.runs / run_id
        atomic.remove(
            folder / "resume.pt",
            folder / "checkpoint.pt",
            folder / "metrics.csv",
            folder / "evals.csv",
            folder / "error.txt",
            folder / "result.json",  # last: a kill half-way leaves the run as it was
        )

    def close(self, run_id: str | None = None) -> None:
        """Close the open files of ``run_id``; with None, of every run, and no run is live."""
        for key in [k for k in self._files if run_id is None or k[0] == run_id]:
            self._close(key)
        if run_id is None:
            self.live.clear()

    def _close(self, key: tuple[str, str]) -> None:
        # Every row was flushed when written, so only a row whose write already failed (and was
        # reported) can be pending here: closing must not raise a second time for it.
        with contextlib.suppress(OSError):
            self._files.pop(key).close()

    def _finish(self, event: RunFinished) -> None:
        run_id, result = event.run_id, event.result
        folder = self.runs / run_id
        self.close(run_id)
        if event.traceback:
            atomic.write_text(folder / "error.txt", event.traceback)
        else:
            atomic.remove(folder / "error.txt")
        spec = self._spec_of(run_id).to_dict()
        atomic.write_json(folder / "result.json", {**result.to_dict(), "spec": spec})
        if result.status in DONE:
            atomic.remove(folder / "resume.pt")
        self.live.pop(run_id, None)

    def _append(self, run_id: str, name: str, header: tuple[str, ...], values: list[Any]) -> None:
        path = self.runs / run_id / name
        try:
            with atomic.writing(path):
                f = self._files.get((run_id, name))
                if f is None:
                    atomic.cut_torn_line(path)
                    new = not path.exists() or path.stat().st_size == 0
                    f = open(path, "a", newline="")  # noqa: SIM115 - open while the run trains
                    self._files[(run_id, name)] = f
                    if new:
                        f.write(atomic.csv_line(header))
                f.write(atomic.csv_line(values))
                f.flush()
        except OSError:
            if (run_id, name) in self._files:
                self._close((run_id, name))  # the next append starts afresh
            raise

    def _truncate(self, run_id: str, name: str, header: tuple[str, ...], step: int) -> None:
        """Keep only the complete rows of ``name`` up to ``step`` (atomic rewrite)."""
        self.close(run_id)
        path = self.runs / run_id / name
        text = atomic.complete_lines(path)
        if not text:
            return
        lines = text.splitlines()[1:]
        kept = [line for line in lines if step_of(line) is not None and step_of(line) <= step]
        atomic.write_text(path, atomic.csv_line(header) + "".join(f"{x}\n" for x in kept))
