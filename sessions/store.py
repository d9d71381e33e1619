"""A session folder on disk: a study, its provenance, one folder per run, and results.csv.

Layout of ``<root>/<name>/``::

    session.json   {format, name, created, study, provenance}
    lock           {pid, host, started, token} of the one process allowed to write
    results.csv    one row per run that has a result (finished, diverged, cancelled, failed)
    runs/<run_id>/ spec.json, metrics.csv, evals.csv, result.json, error.txt,
                   checkpoint.pt (final model), resume.pt (latest resumable state)

Every file is written whole to a temp file and renamed over its name, or appended one flushed
line at a time, so a process killed at any moment leaves a session that opens: results already
written stay, and a run that was training shows as "interrupted". result.json files are the
source of truth; results.csv is rebuilt from them.

Stable columns (README):

results.csv / ``export --what results``:
    run_id, variant, seed, status, val_loss, val_bpc, val_ppl, best_val_loss, final_grad_norm,
    accuracy, macro_accuracy, embed_norm, n_params, iters, tokens, wall_s, device,
    then one column per swept study field other than variant and seed (e.g. lr, n_embd).
    iters is the planned number of steps, tokens the training tokens actually seen, device the
    device the run trained on; metrics are empty when the run never got there.
metrics.csv (one row per optimizer step):
    step, tokens, elapsed_s, loss, grad_norm, embed_norm, lr, tokens_per_s
evals.csv (one row per full validation pass):
    step, tokens, elapsed_s, val_loss, val_bpc, val_ppl
``export --what metrics|evals`` puts run_id, variant, seed and the swept fields first; a swept
field named like a column of the file gets a "spec_" prefix (an lr sweep: spec_lr is the
run's peak lr, lr the scheduled lr of each step).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.events import (
    CheckpointSaved,
    EvalLogged,
    RunFinished,
    RunResult,
    RunStarted,
    StepLogged,
)
from core.spec import FIELD_NAMES, RunSpec, SpecError, Study
from core.status import DONE as DONE_STATUSES
from core.status import STATUS_ORDER as STATUSES
from sessions import atomic
from sessions.provenance import now_iso

if TYPE_CHECKING:
    import pandas as pd

RESULT_COLUMNS = (
    "run_id", "variant", "seed", "status", "val_loss", "val_bpc", "val_ppl", "best_val_loss",
    "final_grad_norm", "accuracy", "macro_accuracy", "embed_norm", "n_params", "iters", "tokens",
    "wall_s", "device",
)  # fmt: skip
METRIC_COLUMNS = (
    "step", "tokens", "elapsed_s", "loss", "grad_norm", "embed_norm", "lr", "tokens_per_s",
)  # fmt: skip
EVAL_COLUMNS = ("step", "tokens", "elapsed_s", "val_loss", "val_bpc", "val_ppl")
EXPORTS = ("results", "metrics", "evals")
FORMAT = 1

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_RUN_DIR = re.compile(r"r(\d+)-")


class SessionError(Exception):
    """A missing, broken, locked or badly named session; the message is one line for the user."""


def default_root() -> Path:
    """$LABTUI_HOME, else ./labtui-sessions."""
    return Path(os.environ.get("LABTUI_HOME") or "labtui-sessions").expanduser()


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe session folder name, else raise SessionError."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise SessionError(
            f"bad session name {name!r}: use up to 100 letters, digits, '.', '_' or '-', "
            "not starting with '.'"
        )
    return name


def session_path(root: Path | str | None, name: str) -> Path:
    """The folder of session ``name`` (a name in ``root``, or a path to a folder inside it)."""
    root = Path(root) if root is not None else default_root()
    is_path = "/" in name or os.sep in name
    if is_path:
        if ".." in Path(name).parts:
            raise SessionError(f"session path {name!r} must not contain '..'")
        path = Path(name).expanduser()
    else:
        path = root / validate_name(name)
    if path.resolve().parent != root.resolve():
        raise SessionError(f"session {name!r} is outside the session root {root}")
    return path


@dataclass
class RunRecord:
    run_id: str
    spec: RunSpec
    status: str
    result: RunResult | None
    error: str | None  # traceback text of a failed run
    step: int  # last logged step, 0 if none


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
        self._running: dict[str, int] = {}  # run_id -> last step, for runs being recorded now
        self._files: dict[tuple[str, str], io.TextIOBase] = {}
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
            session._write_results_csv()  # heal a kill between result.json and results.csv
        return session

    def close(self) -> None:
        """Close open files and release the lock (safe to call twice)."""
        with self._mutex:
            for f in self._files.values():
                f.close()
            self._files.clear()
            self._running.clear()
            if self._token is not None:
                with _guard(self.path):
                    holder = _read_lock(self.path / "lock")
                    if holder and holder.get("token") == self._token:
                        (self.path / "lock").unlink()
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
            name for _, name in self._run_folders() if (self.run_dir(name) / "spec.json").exists()
        ]

    def runs(self) -> list[RunRecord]:
        """Every run in queue order with its status (see core.events.STATUSES)."""
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
        holder = _read_lock(self.path / "lock")
        if holder is None or holder.get("token") == self._token or not _alive(holder):
            return None
        return f"pid {holder.get('pid')} on {holder.get('host')}"

    def axes(self) -> list[str]:
        """Swept fields other than variant and seed: the study's axes plus any that vary."""
        names = list(self.study.axes)
        specs = [self.spec(run_id) for run_id in self.run_ids()]
        for name in FIELD_NAMES:
            varies = len({repr(getattr(s, name)) for s in specs}) > 1
            if varies and name not in names and name not in ("variant", "seed"):
                names.append(name)
        return [n for n in names if n not in RESULT_COLUMNS]

    def results(self) -> pd.DataFrame:
        """One row per run with a result, columns RESULT_COLUMNS + swept fields."""
        import pandas as pd

        columns = [*RESULT_COLUMNS, *self.axes()]
        return pd.DataFrame(self._result_rows(columns), columns=columns)

    def metrics(self, run_id: str) -> pd.DataFrame:
        return self._read_csv(run_id, "metrics.csv", METRIC_COLUMNS)

    def evals(self, run_id: str) -> pd.DataFrame:
        return self._read_csv(run_id, "evals.csv", EVAL_COLUMNS)

    def export(self, what: str = "results") -> pd.DataFrame:
        """results, or every run's metrics / evals with run_id, variant, seed (+ axes) first."""
        import pandas as pd

        if what not in EXPORTS:
            raise SessionError(f"unknown export {what!r}: choose {', '.join(EXPORTS)}")
        if what == "results":
            return self.results()
        columns = METRIC_COLUMNS if what == "metrics" else EVAL_COLUMNS
        fields = ["variant", "seed", *self.axes()]
        keys = ["run_id", *(f"spec_{f}" if f in columns else f for f in fields)]
        frames = []
        for run_id in self.run_ids():
            frame = self._read_csv(run_id, f"{what}.csv", columns)
            if frame.empty:
                continue
            spec = self.spec(run_id)
            frame.insert(0, "run_id", run_id)
            for i, (key, name) in enumerate(zip(keys[1:], fields, strict=True)):
                frame.insert(i + 1, key, getattr(spec, name))
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=[*keys, *columns])
        return pd.concat(frames, ignore_index=True)

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
            folders = self._run_folders()
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
            folder = self.run_dir(run_id)
            resume = folder / "resume.pt"
            if not fresh and record.status in ("interrupted", "cancelled") and resume.exists():
                import torch

                state = torch.load(resume, map_location="cpu", weights_only=True)
                step = int(state["step"])
                self._truncate(run_id, "metrics.csv", METRIC_COLUMNS, step)
                self._truncate(run_id, "evals.csv", EVAL_COLUMNS, step)
                _remove(folder / "result.json", folder / "error.txt")
                return state
            # result.json last: a kill half-way leaves the run as it was
            _remove(
                resume,
                folder / "checkpoint.pt",
                folder / "metrics.csv",
                folder / "evals.csv",
                folder / "error.txt",
                folder / "result.json",
            )
            return None

    def record(self, event: object) -> None:
        """Write one engine event into the run's folder."""
        self._check_writable()
        with self._mutex:
            if isinstance(event, StepLogged):
                self._running[event.run_id] = event.step
                self._append(
                    event.run_id,
                    "metrics.csv",
                    METRIC_COLUMNS,
                    [getattr(event, c) for c in METRIC_COLUMNS],
                )
            elif isinstance(event, EvalLogged):
                self._append(
                    event.run_id,
                    "evals.csv",
                    EVAL_COLUMNS,
                    [getattr(event, c) for c in EVAL_COLUMNS],
                )
            elif isinstance(event, CheckpointSaved):
                import torch

                name = "checkpoint.pt" if event.final else "resume.pt"
                atomic.write_with(
                    self.run_dir(event.run_id) / name, lambda f: torch.save(event.state, f)
                )
            elif isinstance(event, RunStarted):
                self._check_run(event.run_id, need_spec=False)
                spec_file = self.run_dir(event.run_id) / "spec.json"
                if not spec_file.exists():
                    atomic.write_json(spec_file, event.spec.to_dict())
                self._running[event.run_id] = event.start_step
            elif isinstance(event, RunFinished):
                self._finish(event)
            else:
                raise TypeError(f"not an engine event: {event!r}")

    # -- internals -----------------------------------------------------------------------------

    def _finish(self, event: RunFinished) -> None:
        run_id, result = event.run_id, event.result
        folder = self.run_dir(run_id)
        self._close_files(run_id)
        if event.traceback:
            atomic.write_text(folder / "error.txt", event.traceback)
        else:
            _remove(folder / "error.txt")
        atomic.write_json(
            folder / "result.json", {**result.to_dict(), "spec": self.spec(run_id).to_dict()}
        )
        if result.status in DONE_STATUSES:
            _remove(folder / "resume.pt")
        self._running.pop(run_id, None)
        self._write_results_csv()

    def _record(self, run_id: str, other_writer: bool) -> RunRecord:
        spec = self.spec(run_id)
        folder = self.run_dir(run_id)
        result = _read_result(folder / "result.json")
        error = None
        if run_id in self._running:
            status, step = "running", self._running[run_id]
        elif result is not None:
            status, step = result.status, result.step
        else:
            step = _last_step(folder / "metrics.csv")
            progress = step > 0 or (folder / "resume.pt").exists()
            status = ("running" if other_writer else "interrupted") if progress else "pending"
        if status == "failed":
            with contextlib.suppress(OSError):
                error = (folder / "error.txt").read_text()
            error = error or (result.error if result else None)
        return RunRecord(run_id, spec, status, result, error, step)

    def _result_rows(self, columns: list[str]) -> list[list[Any]]:
        rows = []
        for run_id in self.run_ids():
            result = _read_result(self.run_dir(run_id) / "result.json")
            if result is None:
                continue
            spec = self.spec(run_id)
            values = {**spec.to_dict(), **result.to_dict(), "iters": spec.iters}
            rows.append([values.get(c) for c in columns])
        return rows

    def _write_results_csv(self) -> None:
        columns = [*RESULT_COLUMNS, *self.axes()]
        atomic.write_csv(
            self.path / "results.csv",
            columns,
            ([("" if v is None else v) for v in row] for row in self._result_rows(columns)),
        )

    def _append(self, run_id: str, name: str, header: tuple[str, ...], values: list[Any]) -> None:
        f = self._files.get((run_id, name))
        if f is None:
            path = self.run_dir(run_id) / name
            new = not path.exists() or path.stat().st_size == 0
            f = open(path, "a", newline="")  # noqa: SIM115 - kept open while the run trains
            if new:
                f.write(atomic.csv_line(header))
            self._files[(run_id, name)] = f
        f.write(atomic.csv_line(values))
        f.flush()

    def _close_files(self, run_id: str) -> None:
        for key in [k for k in self._files if k[0] == run_id]:
            self._files.pop(key).close()

    def _truncate(self, run_id: str, name: str, header: tuple[str, ...], step: int) -> None:
        """Keep only the complete rows of ``name`` up to ``step`` (atomic rewrite)."""
        self._close_files(run_id)
        path = self.run_dir(run_id) / name
        text = atomic.complete_lines(path)
        if not text:
            return
        lines = text.splitlines()[1:]
        kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
        atomic.write_text(path, atomic.csv_line(header) + "".join(f"{x}\n" for x in kept))

    def _read_csv(self, run_id: str, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
        import pandas as pd

        self._check_run(run_id)
        text = atomic.complete_lines(self.run_dir(run_id) / name)
        if not text.strip():
            return pd.DataFrame(columns=list(columns))
        try:
            return pd.read_csv(io.StringIO(text))
        except (ValueError, pd.errors.ParserError) as err:
            raise SessionError(f"run {run_id} of {self.name} is broken: {name}: {err}") from None

    def _run_folders(self) -> list[tuple[int, str]]:
        try:
            names = os.listdir(self.path / "runs")
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            m = _RUN_DIR.match(name)
            if m and (self.path / "runs" / name).is_dir():
                found.append((int(m.group(1)), name))
        return sorted(found)

    def _check_run(self, run_id: str, need_spec: bool = True) -> None:
        if "/" in run_id or run_id.startswith(".") or not self.run_dir(run_id).is_dir():
            raise SessionError(f"session {self.name} has no run {run_id!r}")
        if need_spec and not (self.run_dir(run_id) / "spec.json").exists():
            raise SessionError(f"session {self.name} has no run {run_id!r}")

    def _check_writable(self) -> None:
        if not self.writable:
            raise SessionError(f"session {self.name} is open read-only")

    def _take_lock(self) -> None:
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now_iso(),
            "token": secrets.token_hex(8),
        }
        lock = self.path / "lock"
        with _guard(self.path):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(lock)
                if holder is not None and _alive(holder):
                    raise SessionError(
                        f"session {self.name} is being written by pid {holder.get('pid')} "
                        f"on {holder.get('host')}"
                    ) from None
                atomic.write_json(lock, me)  # take over the stale lock of a dead process
            else:
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
        self._token = me["token"]
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
            counts = {s: 0 for s in STATUSES}
            for record in session.runs():
                counts[record.status] = counts.get(record.status, 0) + 1
            found.append(
                SessionSummary(session.name, path, session.created, counts, session.writer())
            )
        except SessionError as err:
            found.append(SessionSummary(path.name, path, "", error=str(err)))
    return sorted(found, key=lambda s: (s.created, s.name))


def run_id_for(index: int, spec: RunSpec, axes: list[str] | tuple[str, ...] = ()) -> str:
    """ "r000-none-s0", plus "-lr0.001" style parts for swept fields."""
    parts = [f"r{index:03d}", spec.variant, f"s{spec.seed}"]
    for name in axes:
        value = getattr(spec, name)
        text = f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(re.sub(r"[^A-Za-z0-9.]", "_", f"{name}{text}"))
    return "-".join(parts)


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


def _read_result(path: Path) -> RunResult | None:
    try:
        return RunResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # no result yet (a broken one reads as no result: the run can be redone)


def _last_step(path: Path) -> int:
    line = atomic.last_line(path)
    step = _step_of(line) if line else None
    return step or 0


def _step_of(line: str) -> int | None:
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return None  # the header


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _guard(folder: Path):
    """Serialize lock checks between processes (flock on a side file; POSIX only)."""
    try:
        import fcntl
    except ImportError:  # Windows: the O_EXCL create alone
        yield
        return
    fd = os.open(folder / ".lock-guard", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing, or empty after a kill mid-create: stale
    return data if isinstance(data, dict) else None


def _alive(holder: dict[str, Any]) -> bool:
    """Is the lock holder still running? A lock from another host is assumed alive."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: dead for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
