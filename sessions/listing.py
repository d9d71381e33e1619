"""The sessions under a root, one summary each: `labtui sessions` and the console's browser."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.spec import RunSpec
from core.status import STATUS_ORDER, RunStatus
from sessions.errors import SessionError
from sessions.paths import default_root
from sessions.store import Session


@dataclass
class SessionSummary:
    """One line of `labtui sessions` and of the console's session browser."""

    name: str
    path: Path
    created: str
    counts: dict[str, int] = field(default_factory=dict)  # status -> number of runs
    writer: str | None = None  # "pid N on HOST" while a live process holds the lock
    error: str | None = None  # why the session could not be read
    study: str = ""  # its shape, e.g. "3 variants x 5 seeds x lr(5)" (study_shape)
    best_ppl: float | None = None  # the lowest val_ppl among its finished runs

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def list_sessions(root: Path | str | None = None) -> list[SessionSummary]:
    """Every session folder in ``root`` (oldest first), with its runs counted per status."""
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (path / "session.json").exists():
            continue
        try:
            session = Session.open(root, path.name)
            records = session.runs()
            counts: dict[str, int] = dict.fromkeys(STATUS_ORDER, 0)
            for record in records:
                counts[record.status] += 1
            finished = [
                r.result.val_ppl
                for r in records
                if r.status == RunStatus.FINISHED and r.result and r.result.val_ppl is not None
            ]
            found.append(
                SessionSummary(
                    session.name,
                    path,
                    session.created,
                    counts,
                    session.writer(),
                    study=study_shape([r.spec for r in records], session.axes()),
                    best_ppl=min(finished, default=None),
                )
            )
        except SessionError as err:
            found.append(SessionSummary(path.name, path, "", error=str(err)))
        except OSError as err:  # a file of the wrong kind, unreadable: shown, not fatal
            reason = f"{err.strerror or err}: {err.filename}" if err.filename else str(err)
            found.append(SessionSummary(path.name, path, "", error=f"cannot read it: {reason}"))
    return sorted(found, key=lambda s: (s.created, s.name))


def listed_statuses(found: list[SessionSummary]) -> list[RunStatus]:
    """The status columns of a listing of sessions: finished, and every other status some
    session has a run in, in STATUS_ORDER."""
    return [
        st
        for st in STATUS_ORDER
        if st == RunStatus.FINISHED or any(s.counts.get(st) for s in found)
    ]


def study_shape(specs: list[RunSpec], axes: list[str]) -> str:
    """ "3 variants x 5 seeds x lr(5)": how many variants, seeds and values of each swept axis
    the runs have ("no runs" for none)."""
    if not specs:
        return "no runs"

    def count(name: str) -> int:
        return len({repr(getattr(spec, name)) for spec in specs})

    variants, seeds = count("variant"), count("seed")
    parts = [f"{variants} variant{'s' * (variants != 1)}", f"{seeds} seed{'s' * (seeds != 1)}"]
    return " x ".join(parts + [f"{axis}({count(axis)})" for axis in axes])
