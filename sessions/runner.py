"""Run a session's queue: hand runs to an executor, write every event, then pass it on.

The runner owns the one queue of a session's training: front ends enqueue, cancel and observe;
they keep no copy of it. Every event is written into the session before anyone else sees it. If
writing fails (a full disk), the study stops with ``core.events.SinkError``, whose message names
the file ("no space left on device while writing PATH"): the runs in flight are left as they are
on disk (interrupted, resumable from their last good checkpoint).
"""

from __future__ import annotations

import threading
import traceback
from collections import deque
from typing import Any

from core.events import Event, EventSink, SinkError
from core.ledger import RunLedger
from core.status import RESTARTABLE, TODO, RunStatus
from sessions.executors import Executor, Job, make_executor
from sessions.store import CheckpointError, Session, SessionError


class StudyRunner:
    """Trains a session's unfinished runs; enqueue, cancel one run or all from any thread."""

    def __init__(
        self,
        session: Session,
        corpus: Any,
        *,
        on_event: EventSink | None = None,
        group: bool | None = None,
        executor: str | Executor = "local",
        device: str | None = None,
    ):
        self.session = session
        self.corpus = corpus
        self.on_event = on_event
        self.device = device  # overrides the specs' device (it does not change the numbers)
        if isinstance(executor, str):
            executor = make_executor(
                executor, group=group, device=device or session.study.base.device
            )
        self.executor = executor
        self._mutex = threading.RLock()  # cancel_all may come from a signal handler
        self._queue: deque[str] = deque()
        self._stops: dict[str, threading.Event] = {}
        self._stopping = False
        self._draining = False

    # -- what is queued and what trains ----------------------------------------------------------

    @property
    def queued(self) -> list[str]:
        """Run ids waiting for the executor, in order."""
        with self._mutex:
            return list(self._queue)

    @property
    def active(self) -> set[str]:
        """Run ids handed to the executor and not finished yet."""
        with self._mutex:
            return set(self._stops)

    @property
    def draining(self) -> bool:
        """A ``drain`` is training the queue now."""
        with self._mutex:
            return self._draining

    def todo(self, run_ids: list[str] | None = None, *, retry_failed: bool = False) -> list[str]:
        """What run() would train, in queue order: unfinished runs (and failed ones if asked)."""
        wanted = RESTARTABLE if retry_failed else TODO
        records = self.session.runs()
        if run_ids is not None:
            known = {r.run_id for r in records}
            unknown = [r for r in run_ids if r not in known]
            if unknown:
                raise SessionError(f"session {self.session.name} has no run {unknown[0]!r}")
            chosen = set(run_ids)
            records = [r for r in records if r.run_id in chosen]
        return [r.run_id for r in records if r.status in wanted]

    # -- the queue -----------------------------------------------------------------------------

    def enqueue(self, run_ids: list[str] | None = None, *, retry_failed: bool = False) -> list[str]:
        """Queue runs (default: every unfinished one) that are not queued or training already.

        Returns the ids added, in order. ``drain`` trains them.
        """
        todo = self.todo(run_ids, retry_failed=retry_failed)
        with self._mutex:
            busy = {*self._queue, *self._stops}  # a set: a study may have 10^5 runs
            added = [r for r in todo if r not in busy]
            self._queue.extend(added)
            if added:
                self._stopping = False
            return added

    def drain(self) -> None:
        """Train the queue until it is empty or cancel_all(); one drain at a time (a second call
        returns at once). Raises SinkError when the session cannot be written."""
        with self._mutex:
            if self._draining:
                return
            self._draining = True
        try:
            while batch := self._next_batch():
                stops = {run_id: threading.Event() for run_id in batch}
                with self._mutex:
                    self._stops.update(stops)
                try:
                    jobs = [job for job in map(self._prepare, batch) if job is not None]
                    if jobs:
                        self._execute(jobs, stops)
                finally:
                    with self._mutex:
                        for run_id in batch:
                            self._stops.pop(run_id, None)
                    self.session.abandon(batch)  # any left without an end (a SinkError)
        except SinkError:
            self.cancel_all()
            raise
        finally:
            with self._mutex:
                self._draining = False

    def run(self, run_ids: list[str] | None = None, *, retry_failed: bool = False) -> None:
        """Queue the given runs (default: every unfinished one) and train until done."""
        self.enqueue(run_ids, retry_failed=retry_failed)
        self.drain()

    def cancel(self, run_id: str) -> None:
        """Stop a run in flight (it ends "cancelled", resumable) or take it out of the queue."""
        with self._mutex:
            if run_id in self._queue:
                self._queue.remove(run_id)
            elif run_id in self._stops:
                self._stops[run_id].set()

    def cancel_all(self) -> None:
        """Cancel the runs in flight and empty the queue."""
        with self._mutex:
            self._stopping = True
            self._queue.clear()
            for stop in self._stops.values():
                stop.set()

    def _next_batch(self) -> list[str]:
        """As many queued runs as the executor takes at once (empty: the drain is over)."""
        with self._mutex:
            if self._stopping:
                self._queue.clear()
                return []
            n = min(self.executor.capacity, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    # -- one batch -------------------------------------------------------------------------------

    def _prepare(self, run_id: str) -> Job | None:
        spec = self.session.spec(run_id)
        if self.device:
            spec = spec.replace(device=self.device)
        try:
            state = self.session.begin(run_id)
        except CheckpointError:  # an unreadable resume.pt: this run fails, the queue goes on
            ledger = RunLedger.observing(run_id, spec)
            self._emit(ledger.end(RunStatus.FAILED, trace=traceback.format_exc()))
            return None
        except OSError as err:  # the session's files cannot be written or read: all stop
            raise SinkError(str(err)) from err
        return Job(run_id, spec, state)

    def _execute(self, jobs: list[Job], stops: dict[str, threading.Event]) -> None:
        """Run ``jobs`` on the executor; any that it left without an end are ended "failed"."""
        ledgers = {
            job.run_id: RunLedger.observing(job.run_id, job.spec, job.resume) for job in jobs
        }

        def emit(event: Event) -> None:
            if event.run_id in ledgers:
                ledgers[event.run_id].observe(event)
            self._emit(event)

        try:
            self.executor.execute(jobs, self.corpus, emit, stops)
            trace = "RuntimeError: the executor returned without the run's RunFinished\n"
        except SinkError:
            raise
        except Exception:
            trace = traceback.format_exc()
        for job in jobs:
            ledger = ledgers[job.run_id]
            skipped = not ledger.started and stops[job.run_id].is_set()
            if not ledger.ended and not skipped:
                self._emit(ledger.end(RunStatus.FAILED, trace=trace))

    def _emit(self, event: Event) -> None:
        """Write the event into the session, then pass it on; a failure of either stops all."""
        try:
            self.session.record(event)
            if self.on_event is not None:
                self.on_event(event)
        except SinkError:
            raise
        except OSError as err:  # atomic.WriteError: "no space left on device while writing X"
            raise SinkError(str(err)) from err
        except Exception as err:
            raise SinkError(f"{type(err).__name__}: {err}") from err
