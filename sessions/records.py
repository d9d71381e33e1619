"""What a run's folder says about it: its status, last step, result and error.

A run with a result.json has the result's status. Without one, a run that logged steps or saved a
resumable state is "running" while another live process holds the session's lock, else
"interrupted" (its process died); a run with neither, or without a folder yet, is "pending".
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from core.events import RunResult
from core.spec import RunSpec
from core.status import ENDED, RunStatus
from sessions import atomic


@dataclass
class RunRecord:
    run_id: str
    spec: RunSpec
    status: RunStatus
    result: RunResult | None
    error: str | None  # traceback text of a failed run
    step: int  # last logged step, 0 if none


def read_record(
    folder: Path, spec: RunSpec, *, live_step: int | None = None, other_writer: bool = False
) -> RunRecord:
    """The record of the run in ``folder``; ``live_step`` is its last step while it is recorded
    by this process, ``other_writer`` whether another live process holds the session's lock."""
    if live_step is None and not folder.is_dir():
        return RunRecord(folder.name, spec, RunStatus.PENDING, None, None, 0)  # not started yet
    result = read_result(folder / "result.json")
    error = None
    if live_step is not None:
        status, step = RunStatus.RUNNING, live_step
    elif result is not None:
        status, step = RunStatus(result.status), result.step
    else:
        step = last_step(folder / "metrics.csv")
        progress = step > 0 or (folder / "resume.pt").exists()
        active = RunStatus.RUNNING if other_writer else RunStatus.INTERRUPTED
        status = active if progress else RunStatus.PENDING
    if status == RunStatus.FAILED:
        with contextlib.suppress(OSError):
            error = (folder / "error.txt").read_text()
        error = error or (result.error if result else None)
    return RunRecord(folder.name, spec, status, result, error, step)


def read_result(path: Path) -> RunResult | None:
    """A run's result.json; None when there is none yet.

    A broken one (unreadable, not a result, or a status no run ends with) reads as no result:
    the run can be redone.
    """
    try:
        result = RunResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return result if result.status in ENDED else None


def last_step(path: Path) -> int:
    """The step of the last complete row of a metrics.csv or evals.csv; 0 if none."""
    line = atomic.last_line(path)
    step = step_of(line) if line else None
    return step or 0


def step_of(line: str) -> int | None:
    """The step of one CSV row (its first column); None for the header."""
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return None
