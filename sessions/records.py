"""What a run's folder says about it: its status, last step, result and error.

A run with a result.json has the result's status. Without one, a run that logged steps or saved a
resumable state is "running" while another live process holds the session's lock, else
"interrupted" (its process died); a run with neither, or without a folder yet, is "pending".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from core.events import RunResult
from core.spec import RunSpec
from core.status import RunStatus
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

    A broken one (unreadable, not an object, an unknown status, a value of the wrong type)
    reads as no result: the run can be redone.
    """
    try:
        result = RunResult.from_dict(json.loads(path.read_text()))
        RunStatus(result.status)
    except (OSError, ValueError, TypeError, AttributeError):  # AttributeError: not an object
        return None
    return result if _well_typed(result) else None


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _well_typed(result: RunResult) -> bool:
    """Every value of ``result`` is of its field's type (a float field takes an int too)."""
    for f in dataclasses.fields(result):
        value, kind = getattr(result, f.name), str(f.type)
        if value is None and kind.endswith(" | None"):
            continue
        want = _TYPES.get(kind.removesuffix(" | None"), (object,))
        if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
            return False
    return True


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
