"""A session folder on disk: a study, its provenance, one folder per run, and results.csv.

Layout of ``<root>/<name>/``::

    session.json   {format, name, created, study, grid_order, provenance}
    added.jsonl    runs added after creation (the console's single runs): one line per
                   add_runs call, {"runs": [{"run_id", "spec"}, ...]}
    lock           {pid, host, started, token} of the one process allowed to write (lock.py)
    results.csv    one row per run that has a result (finished, diverged, cancelled, failed)
    runs/<run_id>/ spec.json, metrics.csv, evals.csv, result.json, error.txt,
                   checkpoint.pt (final model), resume.pt (latest resumable state)

A session's runs are its study's cells, in the study's order (grid_order keeps the order of its
axes), with ids derived from it (``r<index>-<variant>-s<seed>[-<axis><value>...]``), then the
runs of added.jsonl. A run's folder is made when the run first starts, so creating a session
writes a few files whatever the study's size, and a kill at any moment of it loses no planned
run: a run without a folder is simply pending. (Format 1 made every folder up front, and lost
the order of the grid's axes: its runs are recovered from the study and the folders there are.)

Every file is written whole to a temp file and renamed over its name, or appended one flushed
line at a time, so a process killed at any moment leaves a session that opens: results already
written stay, and a run that was training shows as "interrupted". Temp files a killed writer left
are removed when the session is next opened for writing. A write that fails raises
atomic.WriteError (an OSError naming the file). The columns of the tables are in tables.py, the
statuses a folder implies in records.py.

``Session`` composes the parts: paths (names, run ids), plan (which runs it holds), lock (one
writer), writer (engine events into run folders), records (status of each run) and tables
(results and exports). listing.py summarizes the sessions of a root.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.events import RunFinished, RunStarted
from core.spec import RunSpec, Study
from core.status import RESTARTABLE
from sessions import atomic, lock, plan, tables
from sessions.errors import SessionError
from sessions.paths import (
    default_root,
    run_folders,
    run_id_for,
    run_index,
    session_path,
    validate_name,
)
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
    "CheckpointError",
    "RunRecord",
    "Session",
    "SessionError",
    "default_root",
    "run_id_for",
    "session_path",
    "validate_name",
]

FORMAT = 2  # 2: run folders are made when their run starts; 1: every folder at creation
BROKEN_SUFFIX = ".broken"  # an unreadable resume.pt is moved aside to resume.pt.broken


class CheckpointError(SessionError):
    """A run's resume.pt cannot be loaded: the run fails, and the file is moved aside."""


class Session:
    """One session folder. Open it to read; ``write=True`` (or ``create``) takes the lock."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = path
        try:
            self.name = str(meta["name"])
            self.created = str(meta.get("created", ""))
            if not isinstance(meta["study"], dict):
                raise TypeError("its study is not an object")
            self.study = Study.from_dict(plan.in_grid_order(meta["study"], meta.get("grid_order")))
            self.format = int(meta.get("format", 1))
            self.provenance: dict[str, Any] = meta.get("provenance") or {}
            if not isinstance(self.provenance, dict):
                raise TypeError("its provenance is not an object")
        except (KeyError, TypeError, ValueError) as err:
            raise SessionError(f"session {path.name} is broken: bad session.json ({err})") from None
        self.writable = False
        self._mutex = threading.RLock()  # record() runs in training threads
        self._plan: dict[str, RunSpec | None] = {}  # run id -> spec (None: read from spec.json)
        self._plan_mark: object = ()  # what the plan was read from (added.jsonl's size and time)
        self._axes: tuple[object, list[str]] = (None, [])  # (plan it is of, axes)
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
        """A new session folder holding ``study`` with every run pending; the lock is taken.

        Writes session.json and an empty runs/ whatever the study's size (run folders come
        when their runs start). Raises SpecError for a study cell that cannot work, before
        anything is written.
        """
        root = Path(root) if root is not None else default_root()
        study.specs()
        if root.exists() and not root.is_dir():
            raise SessionError(f"session root {root} is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        if name is not None:
            path = root / validate_name(name, new=True)
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
            "grid_order": list(study.grid),  # JSON keys are sorted: this keeps the runs' order
            "provenance": provenance or {},
        }
        session = cls(path, meta)
        try:
            session._take_lock()
            with atomic.writing(path / "runs"):
                (path / "runs").mkdir()
            atomic.write_json(path / "session.json", meta)  # the session exists from here on
        except BaseException:
            session.close()
            shutil.rmtree(path, ignore_errors=True)  # not a session yet: its name stays free
            raise
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
            reason = getattr(err, "strerror", None) or err
            raise SessionError(f"session {path.name} is broken: session.json: {reason}") from None
        if not isinstance(meta, dict):
            raise SessionError(f"session {path.name} is broken: session.json is not an object")
        session = cls(path, meta)
        if write:
            session._take_lock()
            try:
                session._heal()
            except BaseException:
                session.close()
                raise
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
        """Run ids in queue order: the study's runs, then the added ones."""
        with self._mutex:
            return list(self._planned())

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
        with self._mutex:
            self._check_run(run_id)
            spec = self._plan[run_id]
            if spec is None:  # a run of a format-1 session: its spec.json says
                try:
                    data = json.loads((self.run_dir(run_id) / "spec.json").read_text())
                    spec = RunSpec.from_dict(data)
                except (OSError, ValueError, TypeError) as err:
                    raise SessionError(
                        f"run {run_id} of {self.name} is broken: spec.json: {err}"
                    ) from None
                self._plan[run_id] = spec
            return spec

    def writer(self) -> str | None:
        """ "pid N on HOST" of another live process holding the lock, else None."""
        return lock.other_writer(self.path, self._token)

    def axes(self) -> list[str]:
        """Swept fields other than variant and seed (the study's axes plus any that vary) that
        are not result columns already (iters and precision are)."""
        with self._mutex:
            planned = self._planned()
            key = (self._plan_mark, len(planned))  # the plan changes only by added runs
            if self._axes[0] != key:  # computed once, not at every run's end: 10^5 runs
                self._axes = (key, tables.axes(self.study, [self.spec(r) for r in planned]))
            return list(self._axes[1])

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
        """Append runs to the queue (pending); returns their new, never reused ids.

        One line in added.jsonl, flushed to disk before this returns: the runs survive a kill
        from then on, and a kill while the line is written leaves none of them (a cut last line
        is dropped).
        """
        self._check_writable()
        with self._mutex:
            planned = self._planned()
            used = [run_index(r) for r in planned] + [i for i, _ in run_folders(self.path / "runs")]
            index = max(used, default=-1) + 1
            axes = self.study.axes
            ids = [run_id_for(index + i, spec, axes) for i, spec in enumerate(specs)]
            if not ids:
                return []
            runs = [{"run_id": r, "spec": s.to_dict()} for r, s in zip(ids, specs, strict=True)]
            atomic.append_line(self.path / plan.ADDED, json.dumps({"runs": runs}) + "\n")
            planned.update(zip(ids, specs, strict=True))
            self._plan_mark = plan.file_mark(self.path / plan.ADDED)
            return ids

    def begin(self, run_id: str, *, fresh: bool = False) -> dict[str, Any] | None:
        """Get a run's folder ready to train; returns the state to resume from, or None.

        A run that did not end by itself (interrupted, cancelled, or failed) continues from its
        resume.pt, its CSVs cut back to that step; a failed run keeps its checkpoint because a
        failure (out of memory, a dead worker) is not the checkpoint's. A resume.pt that cannot
        be loaded is the exception: it is moved to resume.pt.broken and CheckpointError is
        raised (the run fails; retried, it starts over). Runs without a resume.pt, or
        ``fresh``, start over with their old files removed.
        """
        self._check_writable()
        with self._mutex:
            self._writer.prepare(run_id, self.spec(run_id))
            record = self._record(run_id, False)
            resume = self.run_dir(run_id) / "resume.pt"
            if not fresh and record.status in RESTARTABLE and resume.exists():
                state = self._load_resume(run_id, resume)
                self._writer.rewind(run_id, int(state["step"]))
                return state
            self._writer.clear(run_id)
            return None

    def record(self, event: object) -> None:
        """Write one engine event into the run's folder (atomic.WriteError when that fails)."""
        self._check_writable()
        with self._mutex:
            if isinstance(event, RunStarted):
                self._check_run(event.run_id)
            self._writer.write(event)
            if isinstance(event, RunFinished):
                tables.write_results_csv(self)

    def abandon(self, run_ids: list[str]) -> None:
        """Stop recording runs whose end will not be written (their training stopped because
        the session could not be written): each reads as interrupted, as after a kill, and
        resumes from its last checkpoint. Runs already ended are left as they are."""
        with self._mutex:
            for run_id in run_ids:
                self._writer.close(run_id)
                self._writer.live.pop(run_id, None)

    # -- internals -----------------------------------------------------------------------------

    def _record(self, run_id: str, other_writer: bool) -> RunRecord:
        live_step = self._writer.live.get(run_id)
        return read_record(
            self.run_dir(run_id), self.spec(run_id), live_step=live_step, other_writer=other_writer
        )

    def _planned(self) -> dict[str, RunSpec | None]:
        """Run id -> spec of every run, in queue order (re-read when added.jsonl changes)."""
        mark = plan.file_mark(self.path / plan.ADDED)
        if self._plan and mark == self._plan_mark:
            return self._plan
        if self.format >= 2:
            planned = plan.study_plan(self.study)
        else:
            planned = plan.format1_plan(self.study, self.path / "runs")
        planned.update(plan.read_added(self.path / plan.ADDED, self.name))
        self._plan, self._plan_mark = planned, mark
        return planned

    def _load_resume(self, run_id: str, path: Path) -> dict[str, Any]:
        """A run's resume.pt; one that cannot be loaded is moved aside (CheckpointError)."""
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            int(state["step"])
            spec = state.get("spec")
            if spec is not None and RunSpec.from_dict(spec).key() != self.spec(run_id).key():
                raise ValueError("it belongs to another run spec")
        except OSError:
            raise  # the file cannot be read (not that it is broken): nothing is moved
        except Exception as err:
            with atomic.writing(path):
                path.replace(path.with_name(path.name + BROKEN_SUFFIX))
            reason = str(err).strip()
            if "\n" in reason or len(reason) > 120:  # torch's words on a damaged file: a page
                reason = "the file is damaged or incomplete"
            raise CheckpointError(
                f"run {run_id}: resume.pt cannot be loaded ({type(err).__name__}: {reason}); it "
                f"was moved to resume.pt{BROKEN_SUFFIX} and the run starts over when retried"
            ) from err
        return state

    def _heal(self) -> None:
        """Make a session opened for writing whole again after a kill: its runs/ folder, temp
        files left behind, and results.csv rebuilt from the runs' result.json files."""
        runs = self.path / "runs"
        if runs.exists() and not runs.is_dir():
            raise SessionError(f"session {self.name} is broken: {runs} is not a folder")
        with atomic.writing(runs):
            runs.mkdir(exist_ok=True)
        atomic.remove_temps(self.path, keep=lock.is_lock_temp)
        atomic.remove_temps(self.path / "export")
        for name in os.listdir(runs):
            atomic.remove_temps(runs / name)
        tables.write_results_csv(self)

    def _check_run(self, run_id: str) -> None:
        if run_id not in self._planned():
            raise SessionError(f"session {self.name} has no run {run_id!r}")

    def _check_writable(self) -> None:
        if not self.writable:
            raise SessionError(f"session {self.name} is open read-only")

    def _take_lock(self) -> None:
        self._token = lock.acquire(self.path, self.name)
        self.writable = True
        atexit.register(self.close)


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
