"""The `labtui` command: the console with no arguments, headless subcommands otherwise."""

from __future__ import annotations

from typing import Annotated

import typer

from labtui.commands import (
    data_cmd,
    export_cmd,
    report_cmd,
    run_cmd,
    sample_cmd,
    sessions_cmd,
    studies_cmd,
)
from labtui.commands.options import (
    AddressOption,
    DataOption,
    ExecutorOption,
    GpusPerRunOption,
    GroupOption,
    RootOption,
)
from labtui.errors import guard

app = typer.Typer(
    help="labtui: a terminal lab console for controlled ablation studies of small GPT models.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def show_version(value: bool) -> None:
    if value:
        from labtui.commands.version import version_text

        print(version_text())
        raise typer.Exit()


@app.callback(invoke_without_command=True)
@guard
def console(
    ctx: typer.Context,
    data: DataOption = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Open this session (a name or a folder).")
    ] = None,
    root: RootOption = None,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")
    ] = "auto",
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    gpus_per_run: GpusPerRunOption = None,
    group: GroupOption = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=show_version, is_eager=True, help="Show versions and exit."
        ),
    ] = False,
) -> None:
    """Open the lab console when no subcommand is given."""
    if ctx.invoked_subcommand is not None:
        return
    from labtui.launch import run_console  # Textual is imported only for the console

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


# guard: an OSError that reaches a command's boundary is one line and exit 2, not a traceback
app.command("run")(guard(run_cmd.run))
app.command("sessions")(guard(sessions_cmd.sessions))
app.command("export")(guard(export_cmd.export))
app.command("report")(guard(report_cmd.report))
app.command("data")(guard(data_cmd.data))
app.command("sample")(guard(sample_cmd.sample))
app.add_typer(studies_cmd.app, name="studies")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
