"""Which device a run trains on, and in which precision: one rule each, for every front end."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(name: str = "auto") -> str:
    """ "auto" -> cuda if available, else mps, else cpu; anything else is checked and returned."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind, _, index = name.partition(":")
    if name not in ("cpu", "cuda", "mps") and not (kind == "cuda" and index.isdigit()):
        raise RuntimeError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available here")
    if index and int(index) >= torch.cuda.device_count():
        raise RuntimeError(
            f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
            "device(s), numbered from 0"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' asked for, but MPS is not available here")
    return name


def device_name(device: str) -> str:
    """ "CPU", "Apple MPS" or the GPU's name."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return {"mps": "Apple MPS"}.get(device, "CPU")


def resolve_precision(precision: str, device: str) -> str:
    """ "auto" -> "tf32" on CUDA (TF32 matmuls: fast, ~1e-3 relative), else "fp32".

    Any other precision is returned as given. ``device`` may be "auto" too.
    """
    if precision != "auto":
        return precision
    try:
        return "tf32" if resolve_device(device).startswith("cuda") else "fp32"
    except RuntimeError:  # an unavailable device: the run reports it when it starts
        return "fp32"


def apply_precision(precision: str, device: str) -> None:
    """TF32 matmuls on CUDA when asked for, full fp32 otherwise (process-wide in PyTorch)."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"


def autocast_for(precision: str, device: str, *, cache: bool = True):
    """bf16 autocast for "bf16", else a no-op. ``cache=False`` is required inside CUDA graphs."""
    if precision == "bf16":
        return torch.autocast(
            device_type=torch.device(device).type, dtype=torch.bfloat16, cache_enabled=cache
        )
    return contextlib.nullcontext()
