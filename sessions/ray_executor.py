"""The ray executor: a study's runs become Ray tasks on every GPU (or CPU) of a box or cluster.

Each job (or group of jobs) is a Ray generator task (sessions.ray_worker.train_jobs) that trains
with the ordinary engine and streams its events back; this driver hands them to ``emit`` one at
a time, so the runner stays the only writer of the session folder. Cancelling sets a flag on a
StopBoard actor that the tasks poll: the engine saves a resumable checkpoint and returns within
a step or two. A worker or node that dies ends its runs "interrupted"; their last checkpoint is
already on the driver, and ``labtui run --resume`` continues them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.events import Event, SinkError
from core.ledger import RunLedger
from core.status import RunStatus
from sessions.executors import Emit, Job
from sessions.ray_worker import StopBoard, WorkerStarted, corpus_payload, train_jobs
from sessions.store import SessionError

WATCH_S = 0.1  # how often the driver looks at the runner's stop events

_connect_lock = threading.Lock()


class RayExecutor:
    """Runs jobs as Ray tasks: all at once, placed by Ray's scheduler on free GPUs or CPUs.

    ``address``: None starts a local Ray instance with every GPU and CPU of this machine (or
    joins the one this process already started); "auto" joins the cluster this node belongs to;
    "ray://host:10001" goes through Ray Client. ``gpus_per_run``: GPUs each run reserves (a
    fraction such as 0.25 packs four runs on a GPU); None = 1 when the cluster has GPUs, else 0.
    ``group``: train runs of the same shape together (core.grouped), one group per free slot;
    None = on when runs get GPUs (as the local executor decides for CUDA).
    """

    name = "ray"
    capacity = 100_000  # take the whole queue at once and let Ray schedule it

    def __init__(
        self,
        address: str | None = None,
        *,
        gpus_per_run: float | None = None,
        cpus_per_run: float = 1.0,
        group: bool | None = None,
        cancel_grace_s: float = 60.0,
        on_worker: Callable[[WorkerStarted], None] | None = None,
    ):
        if gpus_per_run is not None and (
            gpus_per_run < 0 or (gpus_per_run > 1 and gpus_per_run != int(gpus_per_run))
        ):
            raise SessionError(
                f"--gpus-per-run {gpus_per_run:g}: use a fraction up to 1 or a whole number"
            )
        if cpus_per_run <= 0:
            raise SessionError(f"cpus per run must be positive, not {cpus_per_run:g}")
        self.address = address
        self.gpus_per_run = gpus_per_run
        self.cpus_per_run = cpus_per_run
        self.group = group
        self.cancel_grace_s = cancel_grace_s
        self.on_worker = on_worker
        self.workers: dict[str, WorkerStarted] = {}  # run_id -> where it trains (or trained)
        self._task = None

    # -- the cluster ---------------------------------------------------------------------------

    def connect(self) -> dict[str, float]:
        """Start or join Ray (once per process); returns resources(). Raises SessionError."""
        try:
            import ray
        except ImportError:
            raise SessionError("the ray executor needs Ray: pip install 'labtui[ray]'") from None
        with _connect_lock:
            if not ray.is_initialized():
                _init(ray, self.address)
        resources = self.resources()
        want = self._gpus(resources)
        if want > 0 and resources["GPU"] == 0:
            raise SessionError(f"--gpus-per-run {want:g}: the Ray cluster has no GPUs")
        if want > resources["GPU"] or self.cpus_per_run > resources["CPU"]:
            raise SessionError(
                f"a run asks for {want:g} GPUs and {self.cpus_per_run:g} CPUs, more than any "
                f"Ray node has ({self.describe()})"
            )
        return resources

    def resources(self) -> dict[str, float]:
        """The cluster's nodes, CPUs and GPUs (Ray must be connected)."""
        import ray

        total = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        return {"nodes": nodes, "CPU": total.get("CPU", 0.0), "GPU": total.get("GPU", 0.0)}

    def describe(self) -> str:
        """One line for a header: "ray: 1 node, 2 CPUs, 0 GPUs"."""
        r = self.resources()
        return (
            f"ray: {r['nodes']:g} node{'s' * (r['nodes'] != 1)}, "
            f"{r['CPU']:g} CPUs, {r['GPU']:g} GPUs"
        )

    def _gpus(self, resources: dict[str, float]) -> float:
        if self.gpus_per_run is not None:
            return self.gpus_per_run
        return 1.0 if resources["GPU"] > 0 else 0.0

    # -- running -------------------------------------------------------------------------------

    def execute(
        self, jobs: list[Job], corpus: Any, emit: Emit, stops: dict[str, threading.Event]
    ) -> None:
        """Train ``jobs`` on Ray; returns once every task has ended (finished, failed or died)."""
        import ray

        resources = self.connect()
        if self._task is None:
            self._task = ray.remote(train_jobs)
        task = self._task.options(
            num_cpus=self.cpus_per_run,
            num_gpus=self._gpus(resources),
            max_retries=0,  # a dead worker's runs are "interrupted", never silently redone
            retry_exceptions=False,
        )
        board = ray.remote(StopBoard).options(num_cpus=0).remote()
        payload = ray.put(corpus_payload(corpus))
        threads = max(1, int(self.cpus_per_run))
        units = self.units(jobs, resources)
        sink = _Sink(emit)
        tasks = [_Task(unit, task.remote(unit, payload, board, threads)) for unit in units]
        readers = [
            threading.Thread(target=self._read, args=(t, sink, stops), daemon=True) for t in tasks
        ]
        for reader in readers:
            reader.start()
        try:
            while readers := [r for r in readers if r.is_alive()]:
                self._forward_stops(tasks, stops, board, everything=sink.error is not None)
                readers[0].join(WATCH_S)
        finally:
            with contextlib.suppress(Exception):  # the cluster may be gone with the board
                ray.kill(board)
        if isinstance(sink.error, SinkError):
            raise sink.error
        if sink.error is not None:  # emit raised: the session cannot take the events
            raise SinkError(f"{type(sink.error).__name__}: {sink.error}") from sink.error

    def units(self, jobs: list[Job], resources: dict[str, float]) -> list[list[Job]]:
        """One job per task; with grouping, runs of one shape split evenly over the slots."""
        gpus = self._gpus(resources)
        grouping = self.group if self.group is not None else gpus > 0
        if not grouping:
            return [[job] for job in jobs]
        from core.grouped import group_key

        slots = int(resources["GPU"] // gpus if gpus else resources["CPU"] // self.cpus_per_run)
        kinds: dict[Any, list[Job]] = {}
        for job in jobs:
            kinds.setdefault(group_key(job.spec) or job.run_id, []).append(job)
        units = []
        for same in kinds.values():
            n = max(1, min(slots, len(same)))
            units += [same[i::n] for i in range(n)]
        return units

    def _read(self, task: _Task, sink: _Sink, stops: dict[str, threading.Event]) -> None:
        """Pass one task's events on; when it ends early, end its runs in the session."""
        import ray
        from ray.exceptions import RayError, RayTaskError

        trace = status = None
        try:
            for ref in task.gen:
                for event in ray.get(ref):
                    if isinstance(event, WorkerStarted):
                        task.worker = event
                        for run_id in event.run_ids:
                            self.workers[run_id] = event
                        if self.on_worker is not None:
                            self.on_worker(event)
                        continue
                    task.track(event)
                    sink.send(event)
        except RayTaskError as err:  # our worker code raised (e.g. labtui missing on a node)
            trace, status = str(err), RunStatus.FAILED
        except RayError as err:  # the worker or its node died, or the task was cancelled
            trace, status = f"{type(err).__name__}: {err}\n", RunStatus.INTERRUPTED
        except BaseException as err:  # emit raised (the session cannot be written)
            sink.fail(err)
        finally:
            task.done = True
        if status is None:
            return
        for job in task.jobs:
            run = task.runs[job.run_id]
            if run.ended or (not run.started and stops[job.run_id].is_set()):
                continue  # finished, or cancelled before it began: left as it was
            ended = status
            if status == RunStatus.INTERRUPTED and stops[job.run_id].is_set():
                ended = RunStatus.CANCELLED
            sink.send(run.end(ended, trace=trace))

    def _forward_stops(
        self, tasks: list[_Task], stops: dict[str, threading.Event], board: Any, everything: bool
    ) -> None:
        """Tell the board about newly set stops; cancel queued tasks; force-kill stuck ones."""
        import ray

        now = time.monotonic()
        for task in tasks:
            if task.done:
                continue
            for job in task.jobs:
                if job.run_id not in task.told and (everything or stops[job.run_id].is_set()):
                    board.stop.remote(job.run_id)
                    task.told.add(job.run_id)
                    task.told_at = task.told_at or now
            if len(task.told) < len(task.jobs) or task.cancelled:
                continue
            if task.worker is None:  # still queued: take it out of Ray's queue
                ray.cancel(task.gen)
                task.cancelled = True
            elif now - task.told_at > self.cancel_grace_s:  # it does not stop: kill it
                ray.cancel(task.gen, force=True)
                task.cancelled = True


def _init(ray: Any, address: str | None) -> None:
    """Start a local instance (address None) or join a cluster; quiet, no dashboard."""
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local instance phones nobody
        root = str(Path(__file__).resolve().parents[1])  # workers import core, data, sessions
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        address = "local"
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SessionError(f"cannot start or reach Ray at {address}: {message}") from None


class _Sink:
    """Serializes ``emit`` across reader threads; after a failed emit it drops events."""

    def __init__(self, emit: Emit):
        self.emit = emit
        self.lock = threading.Lock()
        self.error: BaseException | None = None

    def send(self, event: object) -> None:
        with self.lock:
            if self.error is None:
                try:
                    self.emit(event)
                except BaseException as err:
                    self.error = err

    def fail(self, err: BaseException) -> None:
        with self.lock:
            self.error = self.error or err


@dataclass
class _Task:
    jobs: list[Job]
    gen: Any  # ray.ObjectRefGenerator
    worker: WorkerStarted | None = None
    runs: dict[str, RunLedger] = field(default_factory=dict)  # what the driver heard of each
    told: set[str] = field(default_factory=set)  # run ids the board knows are stopped
    told_at: float = 0.0
    cancelled: bool = False
    done: bool = False

    def __post_init__(self) -> None:
        self.runs = {j.run_id: RunLedger.observing(j.run_id, j.spec, j.resume) for j in self.jobs}

    def track(self, event: Event) -> None:
        run = self.runs.get(event.run_id)
        if run is not None:
            run.observe(event)
