"""`labtui report SESSION`: statistics tables on the terminal, files in the session's report/."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from labtui.commands.options import RootOption
from labtui.errors import fail, os_error_line

LEFT_COLUMNS = ("variant", "metric", "family", "effect", "ranking (by PPL)", "winner")


def report(
    session: Annotated[str, typer.Argument(help="Name of the session to report on.")],
    root: RootOption = None,
) -> None:
    """Write stats.csv, pairs.csv, report.md and figures into the session's report/ and print the
    tables."""
    from sessions.report import write_report
    from sessions.store import Session, SessionError

    try:
        result = write_report(Session.open(root, session))
    except SessionError as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write the report of {session}: {os_error_line(err)}")
    show(result, Console())


def show(result, console: Console) -> None:
    """Print a ReportResult: status, summary, comparisons, verdicts, factorial contrasts, sweep
    trade-offs, budget check, files."""
    from sessions.report import comparison_rows, small_n_note, summary_rows, verdict_lines

    style = "bold yellow" if result.partial else "bold"
    console.print(f"[bold]{escape(result.name)}[/]: [{style}]{escape(result.status_line)}[/]")
    if result.n_finished:
        console.print(_table("Summary (finished runs, mean and 95% CI)", *summary_rows(result)))
        if len(result.comparison):
            title = f"Paired comparison with {result.baseline} (by seed)"
            console.print(_table(title, *comparison_rows(result)))
            for line in verdict_lines(result):
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
            if note := small_n_note(result.comparison):
                console.print(f"note: {note}", markup=False, highlight=False)
    else:
        console.print("No run has finished yet: no statistics.")
    _show_factorial(result, console)
    for sweep in result.sweeps:
        _show_sweep(result, sweep, console)
    for problem in result.problems:
        console.print(
            f"[yellow]budget check:[/] {escape(problem)}", highlight=False, soft_wrap=True
        )
    if not result.problems and result.n_finished:
        console.print("budget check: every compared run finished with the same token budget")
    console.print("wrote:")
    for path in result.files:
        console.print(f"  {path}", markup=False, highlight=False, soft_wrap=True)


def _show_factorial(result, console: Console) -> None:
    from sessions.report import factorial_rows, verdict_lines

    if not len(result.factorial):
        return
    title = "Factorial contrasts: scale x normalization (per seed, mean and 95% CI)"
    console.print(_table(title, *factorial_rows(result)))
    for line in verdict_lines(result, "factorial"):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def _show_sweep(result, sweep, console: Console) -> None:
    from core.tradeoff import LR_AXIS
    from sessions.report import (
        sweep_cell_rows,
        sweep_paragraphs,
        sweep_summary_rows,
        sweep_title,
        sweep_winner_rows,
    )

    title = sweep_title(sweep)
    console.print(f"[bold]{escape(title)}[/]")
    console.print(result.init_note, markup=False, highlight=False, soft_wrap=True)
    console.print(_table(f"{title}: per cell", *sweep_cell_rows(sweep)))
    if sweep.axis == LR_AXIS:
        console.print(_table(f"{title}: per variant", *sweep_summary_rows(sweep)))
    console.print(_table(f"{title}: winners", *sweep_winner_rows(sweep)))
    for text in sweep_paragraphs(sweep):
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def _table(title: str, head: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in head:
        left = name in LEFT_COLUMNS or name.startswith("vs ")
        table.add_column(name, justify="left" if left else "right")
    for row in rows:
        table.add_row(*map(Text, row))
    return table
