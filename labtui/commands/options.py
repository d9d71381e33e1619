"""Options that several commands share, spelled once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RootOption = Annotated[
    Path | None,
    typer.Option("--root", help="Session root (else $LABTUI_HOME or ./labtui-sessions)."),
]
DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="Corpus text file (else $LABTUI_DATA, cache, download)."),
]
GroupOption = Annotated[
    bool | None,
    typer.Option("--group/--no-group", help="Train several runs at once (default: auto)."),
]
ExecutorOption = Annotated[str, typer.Option("--executor", help="local or ray.")]
AddressOption = Annotated[
    str | None, typer.Option("--address", help="Ray: auto or HOST:PORT (else a local one).")
]
GpusPerRunOption = Annotated[
    float | None, typer.Option("--gpus-per-run", help="Ray: GPUs per run, e.g. 0.25.")
]


def check_ray_flags(executor: str, address: str | None, gpus_per_run: float | None) -> None:
    """Ray's flags without --executor ray: one line, exit 2."""
    from labtui.errors import fail

    if executor != "ray" and (address is not None or gpus_per_run is not None):
        fail("--address and --gpus-per-run go with --executor ray")


def check_device(device: str) -> None:
    """A device that is unknown or not here: one line, exit 2."""
    from core.device import resolve_device
    from labtui.errors import fail

    try:
        resolve_device(device)
    except RuntimeError as err:
        fail(str(err))
