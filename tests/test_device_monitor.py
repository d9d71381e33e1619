"""The device monitor on the CPU (real threads, load and cores), and its one-line format."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from labtui.device_monitor import (
    GIB,
    OVERLOAD_HINT,
    DeviceSnapshot,
    cpu_cores,
    cpu_warning,
    format_line,
    snapshot,
)


def test_cpu_snapshot_reads_this_process():
    snap = snapshot("cpu")
    assert (snap.device, snap.name) == ("cpu", "CPU")
    assert snap.threads == torch.get_num_threads()
    assert snap.cores == cpu_cores() == len(os.sched_getaffinity(0))
    assert snap.load is not None and snap.load >= 0
    assert snap.memory_used is None and snap.utilization is None
    assert (snap.warning is not None) == snap.overloaded


def test_thread_count_seen_from_a_monitoring_thread():
    """The console asks from its own thread: it must see the count training set."""
    before = torch.get_num_threads()
    seen = []
    try:
        torch.set_num_threads(2)
        worker = threading.Thread(target=lambda: seen.append(snapshot("cpu").threads))
        worker.start()
        worker.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [2]


def test_overload_warning_when_the_load_is_above_the_cores():
    assert cpu_warning(2.0, 2) is None and cpu_warning(None, 2) is None
    warning = cpu_warning(5.3, 2)
    assert warning == f"load 5.3 is above the 2 cores: {OVERLOAD_HINT}"
    snap = DeviceSnapshot("cpu", "CPU", threads=2, load=5.3, cores=2, warning=warning)
    assert snap.overloaded
    assert format_line(snap) == "CPU · 2 threads · load 5.3 on 2 cores (overloaded)"
    calm = DeviceSnapshot("cpu", "CPU", threads=1, load=0.42, cores=16)
    assert not calm.overloaded and format_line(calm) == "CPU · 1 thread · load 0.4 on 16 cores"


def test_gpu_line():
    snap = DeviceSnapshot(
        "cuda:0", "NVIDIA H200", memory_used=int(1.5 * GIB), memory_total=int(139.8 * GIB),
        utilization=37,
    )  # fmt: skip
    assert format_line(snap) == "NVIDIA H200 · mem 1.5/139.8 GiB · util 37%"
    no_nvml = DeviceSnapshot("cuda:0", "NVIDIA H200", memory_used=0, memory_total=int(80 * GIB))
    assert format_line(no_nvml) == "NVIDIA H200 · mem 0.0/80.0 GiB"


def test_cheap_enough_to_call_often():
    start = time.perf_counter()
    for _ in range(200):
        snapshot("cpu")
    assert time.perf_counter() - start < 2.0  # about 10 µs a call; generous for a busy machine


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_snapshot():
    snap = snapshot("cuda")
    assert snap.name == torch.cuda.get_device_name(0)
    assert snap.memory_total == torch.cuda.get_device_properties(0).total_memory
    assert snap.memory_used == torch.cuda.memory_reserved(0)
    assert snap.utilization is None or 0 <= snap.utilization <= 100
