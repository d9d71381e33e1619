"""The console's hold on training: the session's StudyRunner and the one thread worker that
drains its queue.

The runner owns the queue; this class enqueues into it, cancels through it and reads
``runner.queued`` / ``runner.active`` when the screen asks what waits. Engine events arrive in
the training thread, hundreds a second with a tiny model; they go into an EventBuffer that the
app empties on its redraw timer, so a training step costs no Textual message at all.
"""

from __future__ import annotations

import threading
import time

from textual.app import App
from textual.worker import Worker

from sessions.runner import StudyRunner


class EventBuffer:
    """Engine events handed over between threads: ``put`` from training, ``take`` all at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[object] = []

    def put(self, event: object) -> None:
        with self._lock:
            self._events.append(event)

    def take(self) -> list[object]:
        with self._lock:
            events, self._events = self._events, []
        return events


class Training:
    """Enqueue, cancel and watch a session's training from the UI thread."""

    def __init__(self, app: App, session, corpus, *, executor=None, device: str = "auto"):
        self.app = app
        self.events = EventBuffer()
        self.runner = StudyRunner(
            session,
            corpus,
            executor=executor or "local",
            on_event=self.events.put,
            device=None if device == "auto" else device,
        )
        self.worker: Worker | None = None
        self._live = False  # from start() until the app has handled the worker's end
        self.idle = threading.Event()  # set while no drain runs (a quit waits for it)
        self.idle.set()
        self._pace: tuple[float, int] | None = None  # (start, steps) of the running drain

    @property
    def training(self) -> bool:
        """A drain runs, or its end (the last events) is not handled yet."""
        return self._live

    def waiting(self) -> set[str]:
        """Runs queued in the runner or handed to its executor and not finished yet."""
        return set(self.runner.queued) | self.runner.active

    def enqueue(self, run_ids: list[str], *, retry_failed: bool = True) -> list[str]:
        """Queue runs in the runner (starting a drain if none runs); returns the ids added."""
        added = self.runner.enqueue(run_ids, retry_failed=retry_failed)
        if added and not self.training:
            self.start()
        return added

    def start(self) -> None:
        """Drain the runner's queue in a thread worker (Worker.StateChanged tells its end)."""
        self.idle.clear()
        self._live = True
        self._pace = (time.monotonic(), 0)
        self.worker = self.app.run_worker(
            self._drain, name="training", group="training", thread=True, exit_on_error=False
        )

    def _drain(self) -> None:
        try:
            self.runner.drain()  # raises SinkError when the session cannot be written
        finally:
            self.idle.set()

    def cancel(self, run_id: str) -> str | None:
        """Cancel a run: "training" (it stops, resumable), "queued" (taken off), or None."""
        if run_id in self.runner.active:
            where = "training"
        elif run_id in self.runner.queued:
            where = "queued"
        else:
            return None
        self.runner.cancel(run_id)
        return where

    def cancel_all(self) -> None:
        self.runner.cancel_all()

    def stop(self, timeout: float) -> bool:
        """Cancel everything and wait up to ``timeout`` s for the drain to end; True if it did."""
        self.runner.cancel_all()
        return self.idle.wait(timeout)

    def ended(self, failed: bool) -> None:
        """The drain's worker ended: drain again if runs were queued while it was ending (not
        after a failure: then the queue is emptied)."""
        self._pace, self._live = None, False
        if failed:
            self.runner.cancel_all()
        elif self.runner.queued:
            self.start()

    def count_steps(self, steps: int) -> None:
        if self._pace is not None:
            self._pace = (self._pace[0], self._pace[1] + steps)

    def eta(self, views: dict) -> float | None:
        """Seconds left for every queued and running run, at this drain's measured pace."""
        if not self.training or self._pace is None or self._pace[1] < 3:
            return None
        start, steps = self._pace
        pace = steps / max(1e-6, time.monotonic() - start)
        left = sum(
            v.spec.iters - min(v.step, v.spec.iters)
            for run_id in self.waiting()
            if (v := views.get(run_id)) is not None
        )
        return left / pace
