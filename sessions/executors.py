"""Executors train a batch of jobs and report every engine event through ``emit``.

An executor never writes session files: the runner does, from the events it is given, and it
ends as "failed" any run an executor raised before reporting its end. The local executor trains
one run after another in the calling thread, or all of them as one grouped model; the Ray
executor (sessions.ray_executor) runs them on a cluster behind the same interface.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

from core.events import EventSink as Emit
from core.spec import RunSpec


@dataclass(frozen=True)
class Job:
    run_id: str
    spec: RunSpec
    resume: dict[str, Any] | None = None  # the engine state to continue from


class Executor(Protocol):
    name: str  # "local" or "ray", as the user chose it
    capacity: int  # how many jobs one execute() call takes

    def execute(
        self, jobs: list[Job], corpus: Any, emit: Emit, stops: dict[str, threading.Event]
    ) -> None:
        """Train ``jobs``, calling ``emit`` with each event; a set stop cancels its run."""


class LocalExecutor:
    """Trains in the calling thread: one run at a time, or (``group``) all runs it is given at
    once as one batched model (core.grouped), the faster path on a GPU."""

    name = "local"

    def __init__(self, group: bool = False):
        self.group = group
        self.capacity = 100_000 if group else 1

    def execute(
        self, jobs: list[Job], corpus: Any, emit: Emit, stops: dict[str, threading.Event]
    ) -> None:
        from core.engine import train
        from core.grouped import GroupJob, train_group

        live = [job for job in jobs if not stops[job.run_id].is_set()]  # cancelled while queued
        if self.group:
            train_group([GroupJob(j.run_id, j.spec, j.resume) for j in live], corpus, emit, stops)
            return
        for job in live:
            train(job.spec, corpus, emit, stops[job.run_id], run_id=job.run_id, resume=job.resume)


def make_executor(
    name: str = "local",
    *,
    group: bool | None = None,
    address: str | None = None,
    gpus_per_run: float | None = None,
    device: str = "auto",
) -> Executor:
    """The executor called ``name``. ``group`` trains runs as one batched model; None chooses
    the faster path for ``device`` (grouped on CUDA, sequential on a CPU).

    ``address`` and ``gpus_per_run`` are the ray executor's (see sessions.ray_executor).
    """
    from sessions.store import SessionError

    if name != "ray" and (address is not None or gpus_per_run is not None):
        raise SessionError("a Ray address and GPUs per run apply to the ray executor only")
    if name == "local":
        from core.grouped import default_grouping

        return LocalExecutor(group=default_grouping(device) if group is None else group)
    if name == "ray":
        from sessions.ray_executor import RayExecutor  # ray itself is imported on connect()

        return RayExecutor(address, gpus_per_run=gpus_per_run, group=group)
    raise SessionError(f"unknown executor {name!r}: choose local or ray")
