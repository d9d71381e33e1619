"""`labtui export`: a session's results, metrics or evaluations as CSV (no Textual, no GPU).

Columns are stable; sessions.tables' docstring lists them (results: run_id, variant, seed,
status, val_loss, val_bpc, val_ppl, best_val_loss, final_grad_norm, accuracy, macro_accuracy,
embed_norm, n_params, iters, tokens, wall_s, device, then swept fields).

--out PATH: a new or regular file is written atomically (an existing one only with --force); a
FIFO, a device or a socket is written to as a stream (so --out /dev/stdout works), never
replaced; a symlink is followed: what it points to is written by these rules, the link stays.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Annotated

import typer

from labtui.commands.options import RootOption
from labtui.errors import fail, os_error_line


def export(
    session: Annotated[str, typer.Argument(help="Session name in the root, or its folder.")],
    root: RootOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write here instead of stdout. A file is replaced atomically (with --force if it "
            "exists); a FIFO or device (e.g. /dev/stdout) is written to as a stream; a symlink is "
            "followed and kept.",
        ),
    ] = None,
    what: Annotated[
        str,
        typer.Option("--what", help="results (one row per run), metrics (per step) or evals."),
    ] = "results",
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out if it is an existing file.")
    ] = False,
) -> None:
    """Export a session as CSV to stdout or --out."""
    from sessions.export import EXPORTS, csv_text, export_csv
    from sessions.store import Session, SessionError

    if what not in EXPORTS:
        fail(f"unknown --what {what!r}: choose {', '.join(EXPORTS)}")
    if out is not None:
        _check_out(out, force)
    try:
        opened = Session.open(root, session)
        if out is None:
            text, _ = csv_text(opened, what)
        else:
            rows = export_csv(opened, what, out)
    except SessionError as err:
        fail(str(err))
    except OSError as err:
        fail(os_error_line(err))
    if out is None:
        sys.stdout.write(text)
        return
    print(f"wrote {rows} rows to {out}", file=sys.stderr)


def _check_out(out: Path, force: bool) -> None:
    """Refuse a folder, and an existing regular file without --force (symlinks followed)."""
    try:
        mode = os.stat(out).st_mode
    except FileNotFoundError:
        return  # a new file (or the missing target of a symlink)
    if stat.S_ISDIR(mode):
        fail(f"--out {out} is a folder")
    if stat.S_ISREG(mode) and not force:
        fail(f"{out} exists: use --force to overwrite it")
