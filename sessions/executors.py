"""Executors train a batch of jobs and report every engine event through ``emit``.

An executor never writes session files: the runner does, from the events it is given. The
local executor trains one run after another in the calling thread; a grouped executor (many
runs in one process) or a Ray executor (runs on a cluster) plug in behind the same interface.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from core.events import RunFinished, RunResult
from core.spec import RunSpec

Emit = Callable[[object], None]


@dataclass(frozen=True)
class Job:
    run_id: str
    spec: RunSpec
    resume: dict[str, Any] | None = None  # the engine state to continue from


class Executor(Protocol):
    capacity: int  # how many jobs one execute() call takes

    def execute(
        self, jobs: list[Job], corpus: Any, emit: Emit, stops: dict[str, threading.Event]
    ) -> None:
        """Train ``jobs``, calling ``emit`` with each event; a set stop cancels its run."""


class LocalExecutor:
    """Trains in the calling thread: one run at a time, or (``group``) all runs it is given at
    once as one batched model (core.grouped), the faster path on a GPU."""

    def __init__(self, group: bool = False):
        self.group = group
        self.capacity = 100_000 if group else 1

    def execute(
        self, jobs: list[Job], corpus: Any, emit: Emit, stops: dict[str, threading.Event]
    ) -> None:
        from core.engine import train
        from core.grouped import GroupJob, train_group

        if self.group:
            live = [
                GroupJob(j.run_id, j.spec, j.resume) for j in jobs if not stops[j.run_id].is_set()
            ]
            train_group(live, corpus, emit, stops)
            return
        for job in jobs:
            stop = stops[job.run_id]
            if stop.is_set():
                continue  # cancelled before it started: left as it was
            try:
                train(job.spec, corpus, emit, stop, run_id=job.run_id, resume=job.resume)
            except Exception:  # the engine reports its own failures; this is a last resort
                emit(failed(job.run_id, job.spec, traceback.format_exc()))


def failed(run_id: str, spec: RunSpec, trace: str, step: int = 0) -> RunFinished:
    """The RunFinished of a run that raised outside the engine's own error handling."""
    lines = [line for line in trace.strip().splitlines() if line.strip()]
    result = RunResult(
        run_id=run_id,
        status="failed",
        step=step,
        tokens=step * spec.batch_size * spec.block_size,
        n_params=0,
        device=spec.device,
        wall_s=0.0,
        error=lines[-1] if lines else "failed",
    )
    return RunFinished(run_id, result, traceback=trace)


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
        raise SessionError("--address and --gpus-per-run go with --executor ray")
    if name == "local":
        from core.grouped import default_grouping

        return LocalExecutor(group=default_grouping(device) if group is None else group)
    if name == "ray":
        from sessions.ray_executor import RayExecutor  # ray itself is imported on connect()

        return RayExecutor(address, gpus_per_run=gpus_per_run, group=group)
    raise SessionError(f"unknown executor {name!r}: choose local or ray")
