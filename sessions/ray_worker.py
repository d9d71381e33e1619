"""The Ray side of the ray executor: what runs inside a Ray worker process.

A task trains one job (or a group of jobs) with the ordinary engine in a thread and yields its
events, in small batches, as they happen; the driver writes them. Cancellation comes through a
StopBoard actor that the task polls. This module imports core and data only (and ray), never
the session store: workers send events, they write no session files.
"""

from __future__ import annotations

import os
import queue
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

POLL_S = 0.25  # how often a task asks the board whether its runs were cancelled
MAX_BATCH = 256  # events yielded at once when the driver falls behind

_corpora: dict[str, Any] = {}  # sha256 -> Corpus, rebuilt once per worker process


@dataclass(frozen=True)
class WorkerStarted:
    """First item of every task: where its runs train (the driver keeps it, writes nothing)."""

    run_ids: tuple[str, ...]
    pid: int
    node_ip: str
    gpu_ids: tuple[str, ...]


class StopBoard:
    """Run ids whose cancellation was asked for (a Ray actor, one per execute() call)."""

    def __init__(self) -> None:
        self.stopped: set[str] = set()

    def stop(self, run_id: str) -> None:
        self.stopped.add(run_id)

    def which(self, run_ids: list[str]) -> list[str]:
        return [r for r in run_ids if r in self.stopped]


def corpus_payload(corpus: Any) -> dict[str, Any]:
    """What a worker needs to rebuild the corpus: vocabulary and both splits (uint16 arrays)."""
    return {
        "source": corpus.source,
        "sha256": corpus.sha256,
        "itos": list(corpus.itos),
        "train": np.ascontiguousarray(corpus.train),
        "val": np.ascontiguousarray(corpus.val),
    }


def rebuild_corpus(payload: dict[str, Any]) -> Any:
    """A data.Corpus from a payload; the driver's file paths need not exist on this node."""
    from data import Corpus

    corpus = _corpora.get(payload["sha256"])
    if corpus is None:
        corpus = Corpus(
            source=payload["source"],
            sha256=payload["sha256"],
            itos=payload["itos"],
            train=payload["train"],
            val=payload["val"],
            cache_dir=Path("."),
        )
        _corpora.clear()  # one corpus per worker is enough
        _corpora[payload["sha256"]] = corpus
    return corpus


def train_jobs(jobs: list, payload: dict[str, Any], board: Any, threads: int):
    """Ray generator task: train ``jobs`` (one, or a group) and yield lists of their events."""
    import ray
    import torch

    torch.set_num_threads(threads)  # a reused worker may have run a task of another size

    run_ids = [job.run_id for job in jobs]
    stops = {run_id: threading.Event() for run_id in run_ids}
    gpu_ids = tuple(str(g) for g in ray.get_gpu_ids())
    node_ip = ray.util.get_node_ip_address()
    yield [WorkerStarted(tuple(run_ids), os.getpid(), node_ip, gpu_ids)]
    for run_id in ray.get(board.which.remote(run_ids)):
        stops[run_id].set()  # cancelled while queued: such runs are skipped below
    corpus = rebuild_corpus(payload)
    events: queue.Queue = queue.Queue()
    done = threading.Event()

    def work() -> None:
        try:
            _train(jobs, corpus, events.put, stops)
        except BaseException:  # the engine reports runs' failures; this is our own bug
            events.put(_Crash(traceback.format_exc()))
        finally:
            done.set()

    def poll() -> None:
        while not done.wait(POLL_S):
            try:
                for run_id in ray.get(board.which.remote(run_ids)):
                    stops[run_id].set()
            except Exception:  # the driver has gone (its board with it): stop everything
                for stop in stops.values():
                    stop.set()

    trainer = threading.Thread(target=work, name="labtui-train", daemon=True)
    trainer.start()
    threading.Thread(target=poll, name="labtui-stops", daemon=True).start()
    try:
        while not (done.is_set() and events.empty()):
            try:
                batch = [events.get(timeout=POLL_S)]
            except queue.Empty:
                continue
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            crash = next((e for e in batch if isinstance(e, _Crash)), None)
            if crash is not None:
                raise RuntimeError(f"ray worker failed:\n{crash.trace}")
            yield batch
    finally:  # also on a cancel from Ray: never leave training running in a reused worker
        for stop in stops.values():
            stop.set()
        trainer.join()


@dataclass(frozen=True)
class _Crash:
    trace: str


def _train(jobs: list, corpus: Any, on_event, stops: dict[str, threading.Event]) -> None:
    from core.engine import train

    todo = [job for job in jobs if not stops[job.run_id].is_set()]
    if len(todo) > 1:
        from core.grouped import train_group  # grouped engine: many runs in one process

        train_group([(j.run_id, j.spec, j.resume) for j in todo], corpus, on_event, stops)
        return
    for job in todo:
        train(job.spec, corpus, on_event, stops[job.run_id], run_id=job.run_id, resume=job.resume)
