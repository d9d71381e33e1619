"""Run a session's queue: hand runs to an executor, write every event, then pass it on."""

from __future__ import annotations

import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from core.events import RunFinished, RunStarted
from sessions.executors import Executor, Job, failed, make_executor
from sessions.store import Session, SessionError

TODO = ("pending", "interrupted", "cancelled")


class StudyRunner:
    """Trains a session's unfinished runs; cancel one run or all from any thread."""

    def __init__(
        self,
        session: Session,
        corpus: Any,
        *,
        on_event: Callable[[object], None] | None = None,
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

    @property
    def active(self) -> set[str]:
        """Run ids handed to the executor and not finished yet."""
        with self._mutex:
            return set(self._stops)

    def todo(self, run_ids: list[str] | None = None, *, retry_failed: bool = False) -> list[str]:
        """What run() would train, in queue order: unfinished runs (and failed ones if asked)."""
        wanted = TODO + (("failed",) if retry_failed else ())
        records = self.session.runs()
        if run_ids is not None:
            known = {r.run_id for r in records}
            unknown = [r for r in run_ids if r not in known]
            if unknown:
                raise SessionError(f"session {self.session.name} has no run {unknown[0]!r}")
            records = [r for r in records if r.run_id in set(run_ids)]
        return [r.run_id for r in records if r.status in wanted]

    def run(self, run_ids: list[str] | None = None, *, retry_failed: bool = False) -> None:
        """Train the given runs, or every unfinished one; returns when the queue is done."""
        with self._mutex:
            self._stopping = False
            self._queue = deque(self.todo(run_ids, retry_failed=retry_failed))
        while True:
            with self._mutex:
                if self._stopping or not self._queue:
                    return
                n = min(self.executor.capacity, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
                stops = {run_id: threading.Event() for run_id in batch}
                self._stops.update(stops)
            try:
                jobs = [job for job in map(self._prepare, batch) if job is not None]
                if jobs:
                    self._execute(jobs, stops)
            finally:
                with self._mutex:
                    for run_id in batch:
                        self._stops.pop(run_id, None)

    def cancel(self, run_id: str) -> None:
        """Stop a run in flight (it ends "cancelled", resumable) or take it out of the queue."""
        with self._mutex:
            if run_id in self._queue:
                self._queue.remove(run_id)
            elif run_id in self._stops:
                self._stops[run_id].set()

    def cancel_all(self) -> None:
        """Cancel the runs in flight and stop the queue."""
        with self._mutex:
            self._stopping = True
            self._queue.clear()
            for stop in self._stops.values():
                stop.set()

    def _prepare(self, run_id: str) -> Job | None:
        spec = self.session.spec(run_id)
        if self.device:
            spec = spec.replace(device=self.device)
        try:
            state = self.session.begin(run_id)
        except Exception:  # e.g. an unreadable resume.pt: this run fails, the queue goes on
            self._emit(failed(run_id, spec, traceback.format_exc()))
            return None
        return Job(run_id, spec, state)

    def _execute(self, jobs: list[Job], stops: dict[str, threading.Event]) -> None:
        started: set[str] = set()
        ended: set[str] = set()

        def emit(event: object) -> None:
            if isinstance(event, RunStarted):
                started.add(event.run_id)
            elif isinstance(event, RunFinished):
                ended.add(event.run_id)
            self._emit(event)

        try:
            self.executor.execute(jobs, self.corpus, emit, stops)
            trace = "RuntimeError: the executor returned without the run's RunFinished\n"
        except Exception:
            trace = traceback.format_exc()
        for job in jobs:
            skipped = job.run_id not in started and stops[job.run_id].is_set()
            if job.run_id not in ended and not skipped:
                step = self.session.run(job.run_id).step
                self._emit(failed(job.run_id, job.spec, trace, step))

    def _emit(self, event: object) -> None:
        self.session.record(event)
        if self.on_event is not None:
            self.on_event(event)
