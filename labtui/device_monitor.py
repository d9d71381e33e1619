"""What the training device is doing, cheaply enough to ask every couple of seconds from a thread.

On a GPU: its name, the memory this process's PyTorch holds (its caching allocator's reservation),
the device's total memory and its utilization (the utilization needs NVIDIA's management library:
``pip install 'labtui[gpu]'``).
On the CPU: PyTorch's thread count, the 1-minute load average and the cores this process may use,
with a warning when the load is above the cores. Nothing here waits for the GPU (no synchronize).
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch

GIB = 1024**3
OVERLOAD_HINT = "PyTorch's threads then wait on each other and a step can be many times slower"


@dataclass(frozen=True)
class DeviceSnapshot:
    device: str  # "cuda:0", "mps", "cpu"
    name: str  # the GPU's name, "Apple MPS" or "CPU"
    memory_used: int | None = None  # bytes PyTorch holds on the GPU for this process
    memory_total: int | None = None  # bytes on the device
    utilization: int | None = None  # percent of time the GPU was busy (NVML only)
    threads: int | None = None  # PyTorch's intra-op threads (CPU)
    load: float | None = None  # 1-minute load average (CPU)
    cores: int | None = None  # cores this process may run on (CPU)
    warning: str | None = None  # one line when the CPU is overloaded (cpu_warning)

    @property
    def overloaded(self) -> bool:
        """The warning flag: more runnable work than cores, so training slows down."""
        return self.warning is not None


def snapshot(device: str = "cpu") -> DeviceSnapshot:
    """The state of ``device`` ("cpu", "cuda", "cuda:N" or "mps"; resolve "auto" beforehand)."""
    if device.startswith("cuda"):
        return _cuda(torch.device(device).index or 0)
    if device == "mps":
        return DeviceSnapshot("mps", "Apple MPS", memory_used=torch.mps.current_allocated_memory())
    return _cpu()


def format_line(snap: DeviceSnapshot) -> str:
    """One line for a header: "NVIDIA H200 · mem 1.2/139.8 GiB · util 37%" or
    "CPU · 2 threads · load 3.1 on 2 cores (overloaded)"."""
    parts = [snap.name]
    if snap.memory_used is not None:
        total = f"/{snap.memory_total / GIB:.1f}" if snap.memory_total else ""
        parts.append(f"mem {snap.memory_used / GIB:.1f}{total} GiB")
    if snap.utilization is not None:
        parts.append(f"util {snap.utilization}%")
    if snap.threads is not None:
        parts.append(f"{snap.threads} thread{'s' if snap.threads != 1 else ''}")
    if snap.load is not None:
        load = f"load {snap.load:.1f} on {snap.cores} cores"
        parts.append(load + (" (overloaded)" if snap.overloaded else ""))
    return " · ".join(parts)


def cpu_cores() -> int:
    """Cores this process may run on (its affinity, which containers and taskset narrow)."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_warning(load: float | None, cores: int) -> str | None:
    """One line when the load average is above the cores, else None."""
    if load is None or load <= cores:
        return None
    return f"load {load:.1f} is above the {cores} cores: {OVERLOAD_HINT}"


def _cpu() -> DeviceSnapshot:
    threads, cores = torch.get_num_threads(), cpu_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        load = None
    warning = cpu_warning(load, cores)
    return DeviceSnapshot("cpu", "CPU", threads=threads, load=load, cores=cores, warning=warning)


def _cuda(index: int) -> DeviceSnapshot:
    name, total = _gpu(index)
    busy = None
    handle = _nvml_handle(index)
    if handle is not None:
        import pynvml

        with contextlib.suppress(pynvml.NVMLError):
            busy = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    return DeviceSnapshot(
        f"cuda:{index}",
        name,
        memory_used=torch.cuda.memory_reserved(index),  # the allocator's count: no sync
        memory_total=total,
        utilization=busy,
    )


@functools.cache
def _gpu(index: int) -> tuple[str, int]:
    props = torch.cuda.get_device_properties(index)
    return props.name, props.total_memory


@functools.cache
def _nvml_handle(index: int):
    """NVML's handle for PyTorch's device ``index`` (matched by UUID, so CUDA_VISIBLE_DEVICES
    cannot mix GPUs up), or None without nvidia-ml-py or when NVML cannot find it."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(index).uuid)  # without NVML's "GPU-"
        return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid.removeprefix('GPU-')}".encode())
    except (pynvml.NVMLError, AttributeError):
        return None
