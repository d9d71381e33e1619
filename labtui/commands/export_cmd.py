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
from labtui.errors import fail


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
    from sessions import atomic
    from sessions.store import EXPORTS, Session, SessionError

    if what not in EXPORTS:
        fail(f"unknown --what {what!r}: choose {', '.join(EXPORTS)}")
    stream = out is not None and _is_stream(out, force)
    try:
        frame = Session.open(root, session).export(what)
    except SessionError as err:
        fail(str(err))
    text = frame.to_csv(index=False)
    if out is None:
        sys.stdout.write(text)
        return
    if stream:
        with open(out, "w") as f:
            f.write(text)
    else:
        atomic.write_text(Path(os.path.realpath(out)), text)  # a symlink's target, not the link
    print(f"wrote {len(frame)} rows to {out}", file=sys.stderr)


def _is_stream(out: Path, force: bool) -> bool:
    """Is --out written as a stream (a FIFO, device or socket)? Refuses a folder, and an
    existing file without --force. A symlink is judged by what it points to."""
    try:
        mode = os.stat(out).st_mode
    except FileNotFoundError:
        return False  # a new file (or the missing target of a symlink)
    if stat.S_ISDIR(mode):
        fail(f"--out {out} is a folder")
    if stat.S_ISREG(mode):
        if not force:
            fail(f"{out} exists: use --force to overwrite it")
        return False
    return True
