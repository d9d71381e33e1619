"""`labtui studies`: the built-in studies, what each costs, and its TOML text."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from labtui.errors import fail, guard

app = typer.Typer(
    help="The built-in studies: `labtui studies` lists them, `labtui studies show NAME` prints "
    "one (copy it to a file and edit it for --study). `labtui run --preset NAME` runs one.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def studies(
    ctx: typer.Context,
    device: Annotated[
        str, typer.Option("--device", help="Estimate for this device: auto, cpu, cuda.")
    ] = "auto",
    remeasure: Annotated[
        bool,
        typer.Option("--remeasure", help="Measure the step time again (do it on a quiet machine)."),
    ] = False,
) -> None:
    """List the built-in studies: purpose, runs, training tokens and an estimated wall time."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from core.presets import load_preset, preset_names
    from labtui.commands.options import check_device
    from labtui.plotting import format_duration
    from sessions.estimates import estimate

    check_device(device)
    console = Console()
    table = Table(show_edge=False, pad_edge=False)
    for name, justify in (("name", "left"), ("purpose", "left"), ("runs", "right"),
                          ("tokens", "right"), ("estimate", "right")):  # fmt: skip
        table.add_column(name, justify=justify, overflow="fold")
    hows = []
    for name in preset_names():
        study = load_preset(name)
        if device != "auto":
            study = dataclasses.replace(study, base=study.base.replace(device=device))
        guess = estimate(study, remeasure=remeasure and not hows)
        hows.append(guess.how)
        table.add_row(
            name, study.description, str(guess.runs), f"{guess.tokens / 1e6:,.1f}M",
            f"~{format_duration(guess.seconds)}",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"estimate: {'; '.join(dict.fromkeys(hows))}; `--remeasure` measures again "
        "(grouped training on a GPU is faster than this)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def show(name: Annotated[str, typer.Argument(help="A built-in study's name.")]) -> None:
    """Print a built-in study's TOML."""
    from core.presets import preset_text
    from core.spec import SpecError

    try:
        print(preset_text(name), end="")
    except SpecError as err:
        fail(str(err))


app.callback()(guard(studies))
app.command("show")(guard(show))
