"""`labtui export`: a session's results, metrics or evaluations as CSV (no Textual, no GPU).

Columns are stable; sessions.tables' docstring lists them (results: run_id, variant, seed,
status, val_loss, val_bpc, val_ppl, best_val_loss, final_grad_norm, accuracy, macro_accuracy,
embed_norm, n_params, iters, tokens, wall_s, device, then swept fields).
"""

from __future__ import annotations

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
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
    what: Annotated[
        str,
        typer.Option("--what", help="results (one row per run), metrics (per step) or evals."),
    ] = "results",
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Export a session as CSV to stdout or --out."""
    from sessions.export import EXPORTS, csv_text, export_csv
    from sessions.store import Session, SessionError

    if what not in EXPORTS:
        fail(f"unknown --what {what!r}: choose {', '.join(EXPORTS)}")
    if out is not None and out.exists() and not force:
        fail(f"{out} exists: use --force to overwrite it")
    try:
        opened = Session.open(root, session)
        if out is None:
            text, _ = csv_text(opened, what)
        else:
            rows = export_csv(opened, what, out)
    except SessionError as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write {out}: {err.strerror or err}")
    if out is None:
        sys.stdout.write(text)
        return
    print(f"wrote {rows} rows to {out}", file=sys.stderr)
