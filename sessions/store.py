"""A session folder on disk: a study, its provenance, one folder per run, and results.csv.

Layout of ``<root>/<name>/``::

    session.json   {format, name, created, study, provenance}
    lock           {pid, host, started, token} of the one process allowed to write (lock.py)
    results.csv    one row per run that has a result (finished, diverged, cancelled, failed)
    runs/<run_id>/ spec.json, metrics.csv, evals.csv, result.json, error.txt,
                   checkpoint.pt (final model), resume.pt (latest resumable state)

Every file is written whole to a temp file and renamed over its name, or appended one flushed
line at a time, so a process killed at any moment leaves a session that opens: results already
written stay, and a run that was training shows as "interrupted". The columns of the tables are
in tables.py, the statuses a folder implies in records.py.

``Session`` composes the parts: paths (names, run ids), lock (one writer), writer (engine events
into run folders), records (status of each run) and tables (results and exports).
"""

from __future__ import annotations

import atexit
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.events import RunFinished, RunStarted
from core.spec import RunSpec, SpecError, Study
from core.status import RESUMABLE, STATUS_ORDER
from sessions import atomic, lock, tables
from sessions.errors import SessionError
from sessions.paths import default_root, run_folders, run_id_for, session_path, validate_name
from sessions.provenance import now_iso
from sessions.records import RunRecord, read_record
from sessions.tables import EVAL_COLUMNS, EXPORTS, METRIC_COLUMNS, RESULT_COLUMNS
from sessions.writer import EventWriter

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "EVAL_COLUMNS",
    "EXPORTS",
    "METRIC_COLUMNS",
    "RESULT_COLUMNS",
    "RunRecord",
    "Session",
    "SessionError",
    "SessionSummary",
    "default_root",
    "list_sessions",
    "run_id_for",
    "session_path",
    "validate_name",
]

FORMAT = 1


@dataclass
class SessionSummary:
    name: str
    path: Path
    created: str
    counts: dict[str, int] = field(default_factory=dict)  # status -> number of runs
    writer: str | None = None  # "pid N on HOST" while a live process holds the lock
    error: str | None = None  # why the session could not be read

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Session:
    """One session folder. Open it to read; ``write=True`` (or ``create``) takes the lock."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = path
        try:
            self.name = str(meta["name"])
            self.created = str(meta.get("created", ""))
            self.study = Study.from_dict(meta["study"])
        except (KeyError, TypeError, SpecError) as err:
            raise SessionError(f"session {path.name} is broken: bad session.json ({err})") from None
        self.provenance: dict[str, Any] = meta.get("provenance") or {}
        self.writable = False
        self._mutex = threading.RLock()  # record() runs in training threads
        self._specs: dict[str, RunSpec] = {}
        self._writer = EventWriter(path / "runs", self.spec)
        self._token: str | None = None

    # -- opening and closing -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path | str | None,
        study: Study,
        *,
        name: str | None = None,
        provenance: dict | None = None,
    ) -> Session:
        """A new session folder holding ``study`` with every run pending; the lock is taken."""
        root = Path(root) if root is not None else default_root()
        root.mkdir(parents=True, exist_ok=True)
        if name is not None:
            path = root / validate_name(name)
            try:
                path.mkdir()
            except FileExistsError:
                raise SessionError(
                    f"session {name!r} already exists in {root} (resume it, or pick another name)"
                ) from None
        else:
            path = _new_folder(root)
        meta = {
            "format": FORMAT,
            "name": path.name,
            "created": now_iso(),
            "study": study.to_dict(),
            "provenance": provenance or {},
        }
        session = cls(path, meta)
        session._take_lock()
        atomic.write_json(path / "session.json", meta)
        (path / "runs").mkdir()
        session.add_runs(study.specs())
        return session

    @classmethod
    def open(cls, root: Path | str | None, name: str, *, write: bool = False) -> Session:
        """An existing session by name (or path inside ``root``); ``write`` takes the lock."""
        path = session_path(root, name)
        if not path.is_dir():
            where = root if root is not None else default_root()
            raise SessionError(f"no session {name!r} in {where}")
        try:
            meta = json.loads((path / "session.json").read_text())
        except FileNotFoundError:
            raise SessionError(f"{path} is not a labtui session (no session.json)") from None
        except (OSError, ValueError) as err:
            raise SessionError(f"session {path.name} is broken: session.json: {err}") from None
        if not isinstance(meta, dict):
            raise SessionError(f"session {path.name} is broken: session.json is not an object")
        session = cls(path, meta)
        if write:
            session._take_lock()
            (path / "runs").mkdir(exist_ok=True)
            tables.write_results_csv(session)  # heal a kill between result.json and results.csv
        return session

    def close(self) -> None:
        """Close open files and release the lock (safe to call twice)."""
        with self._mutex:
            self._writer.close()
            if self._token is not None:
                lock.release(self.path, self._token)
                self._token = None
                atexit.unregister(self.close)
            self.writable = False

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session({str(self.path)!r}, writable={self.writable})"

    # -- reading -------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.path / "runs" / run_id

    def run_ids(self) -> list[str]:
        """Run ids in queue order (folders without a spec.json are a kill mid-add: skipped)."""
        return [
            name
            for _, name in run_folders(self.path / "runs")
            if (self.run_dir(name) / "spec.json").exists()
        ]

    def runs(self) -> list[RunRecord]:
        """Every run in queue order with its status (a core.status.RunStatus)."""
        with self._mutex:
            writer = None if self.writable else self.writer()
            return [self._record(run_id, writer is not None) for run_id in self.run_ids()]

    def run(self, run_id: str) -> RunRecord:
        with self._mutex:
            self._check_run(run_id)
            writer = None if self.writable else self.writer()
            return self._record(run_id, writer is not None)

    def spec(self, run_id: str) -> RunSpec:
        spec = self._specs.get(run_id)
        if spec is None:
            self._check_run(run_id)
            try:
                data = json.loads((self.run_dir(run_id) / "spec.json").read_text())
                spec = RunSpec.from_dict(data)
            except (OSError, ValueError, TypeError) as err:
                raise SessionError(
                    f"run {run_id} of {self.name} is broken: spec.json: {err}"
                ) from None
            self._specs[run_id] = spec
        return spec

    def writer(self) -> str | None:
        """ "pid N on HOST" of another live process holding the lock, else None."""
        return lock.other_writer(self.path, self._token)

    def axes(self) -> list[str]:
        """Swept fields other than variant and seed: the study's axes plus any that vary."""
        return tables.axes(self.study, [self.spec(run_id) for run_id in self.run_ids()])

    def results(self) -> pd.DataFrame:
        """One row per run with a result, columns RESULT_COLUMNS + swept fields."""
        return tables.results(self)

    def metrics(self, run_id: str) -> pd.DataFrame:
        self._check_run(run_id)
        where = f"run {run_id} of {self.name}"
        return tables.read_run_csv(self.run_dir(run_id) / "metrics.csv", METRIC_COLUMNS, where)

    def evals(self, run_id: str) -> pd.DataFrame:
        self._check_run(run_id)
        where = f"run {run_id} of {self.name}"
        return tables.read_run_csv(self.run_dir(run_id) / "evals.csv", EVAL_COLUMNS, where)

    def export(self, what: str = "results") -> pd.DataFrame:
        """results, or every run's metrics / evals with run_id, variant, seed (+ axes) first."""
        return tables.export(self, what)

    def load_checkpoint(self, run_id: str, *, final: bool = True) -> dict[str, Any]:
        """The engine state saved for a run (checkpoint.pt, or resume.pt), loaded weights-only."""
        import torch

        path = self.run_dir(run_id) / ("checkpoint.pt" if final else "resume.pt")
        if not path.exists():
            raise SessionError(f"run {run_id} has no {path.name}")
        return torch.load(path, map_location="cpu", weights_only=True)

    # -- writing -------------------------------------------------------------------------------

    def add_runs(self, specs: list[RunSpec]) -> list[str]:
        """Append runs to the queue (pending); returns their new, never reused ids."""
        self._check_writable()
        with self._mutex:
            folders = run_folders(self.path / "runs")
            index = folders[-1][0] + 1 if folders else 0
            axes = self.study.axes
            ids = []
            for spec in specs:
                run_id = run_id_for(index, spec, axes)
                self.run_dir(run_id).mkdir(parents=True)
                atomic.write_json(self.run_dir(run_id) / "spec.json", spec.to_dict())
                self._specs[run_id] = spec
                ids.append(run_id)
                index += 1
            return ids

    def begin(self, run_id: str, *, fresh: bool = False) -> dict[str, Any] | None:
        """Get a run's folder ready to train; returns the state to resume from, or None.

        Interrupted and cancelled runs continue from resume.pt (their CSVs cut back to its
        step); other runs, or ``fresh``, start over with their old files removed.
        """
        self._check_writable()
        with self._mutex:
            record = self._record(run_id, False)
            resume = self.run_dir(run_id) / "resume.pt"
            if not fresh and record.status in RESUMABLE and resume.exists():
                import torch

                state = torch.load(resume, map_location="cpu", weights_only=True)
                self._writer.rewind(run_id, int(state["step"]))
                return state
            self._writer.clear(run_id)
            return None

    def record(self, event: object) -> None:
        """Write one engine event into the run's folder."""
        self._check_writable()
        with self._mutex:
            if isinstance(event, RunStarted):
                self._check_run(event.run_id, need_spec=False)
            self._writer.write(event)
            if isinstance(event, RunFinished):
                tables.write_results_csv(self)

    # -- internals -----------------------------------------------------------------------------

    def _record(self, run_id: str, other_writer: bool) -> RunRecord:
        live_step = self._writer.live.get(run_id)
        return read_record(
            self.run_dir(run_id), self.spec(run_id), live_step=live_step, other_writer=other_writer
        )

    def _check_run(self, run_id: str, need_spec: bool = True) -> None:
        if "/" in run_id or run_id.startswith(".") or not self.run_dir(run_id).is_dir():
            raise SessionError(f"session {self.name} has no run {run_id!r}")
        if need_spec and not (self.run_dir(run_id) / "spec.json").exists():
            raise SessionError(f"session {self.name} has no run {run_id!r}")

    def _check_writable(self) -> None:
        if not self.writable:
            raise SessionError(f"session {self.name} is open read-only")

    def _take_lock(self) -> None:
        self._token = lock.acquire(self.path, self.name)
        self.writable = True
        atexit.register(self.close)


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
            counts: dict[str, int] = dict.fromkeys(STATUS_ORDER, 0)
            for record in session.runs():
                counts[record.status] += 1
            found.append(
                SessionSummary(session.name, path, session.created, counts, session.writer())
            )
        except SessionError as err:
            found.append(SessionSummary(path.name, path, "", error=str(err)))
    return sorted(found, key=lambda s: (s.created, s.name))


def _new_folder(root: Path) -> Path:
    """Create ``<root>/<time>-<random>``; a name taken by a concurrent process is retried."""
    for _ in range(100):
        path = root / _candidate_name()
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise SessionError(f"could not find a free session name in {root}")


def _candidate_name() -> str:
    """ "20261128-061503-a3f9": the local time and a random suffix."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
