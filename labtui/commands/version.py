"""`labtui --version`: labtui, torch, CUDA and the device a run would train on."""

from __future__ import annotations


def version_text() -> str:
    """Three lines: labtui's version (package metadata), torch and CUDA, the "auto" device."""
    import torch

    from core.device import device_name, resolve_device
    from sessions.provenance import labtui_version

    device = resolve_device("auto")
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA build"
    return (
        f"labtui {labtui_version()}\n"
        f"torch {torch.__version__} ({cuda})\n"
        f"device {device} ({device_name(device)})"
    )
