"""The `labtui` command: the console with no arguments, headless subcommands otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labtui.commands import data_cmd, export_cmd, report_cmd, run_cmd, sessions_cmd

app = typer.Typer(
    help="labtui: a terminal lab console for controlled ablation studies of small GPT models.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback(invoke_without_command=True)
def console(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Corpus text file (else $LABTUI_DATA, the cache, a download)."),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Open this session (a name or a folder).")
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Session root (else $LABTUI_HOME or ./labtui-sessions)."),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")
    ] = "auto",
    executor: Annotated[str, typer.Option("--executor", help="local or ray.")] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray: auto or HOST:PORT (else a local one).")
    ] = None,
    gpus_per_run: Annotated[
        float | None, typer.Option("--gpus-per-run", help="Ray: GPUs per run, e.g. 0.25.")
    ] = None,
    group: Annotated[
        bool | None,
        typer.Option("--group/--no-group", help="Train runs as one batched model (default: auto)."),
    ] = None,
) -> None:
    """Open the lab console when no subcommand is given."""
    if ctx.invoked_subcommand is not None:
        return
    from labtui.app import run_console  # Textual is imported only for the console

    run_console(
        data=data,
        session=session,
        root=root,
        device=device,
        executor=executor,
        address=address,
        gpus_per_run=gpus_per_run,
        group=group,
    )


app.command("run")(run_cmd.run)
app.command("sessions")(sessions_cmd.sessions)
app.command("export")(export_cmd.export)
app.command("report")(report_cmd.report)
app.command("data")(data_cmd.data)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
