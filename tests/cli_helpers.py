"""Calling the real `labtui` CLI in-process (typer's CliRunner), shared by the CLI tests."""

from __future__ import annotations

from typer.testing import CliRunner

from labtui.cli import app


def invoke(*args):
    """`labtui ARGS...` (any argument turned into a string); the click Result."""
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The output of a refused command: exactly one line, `labtui: error: ...`, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labtui: error: "), result.output
    return lines[0]
