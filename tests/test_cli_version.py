"""`labtui --version` and shell completion, through the real CLI."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import torch
from typer.testing import CliRunner

from core.device import device_name, resolve_device
from labtui.cli import app

# The console script's entry point, named "labtui" as when installed.
LABTUI = [sys.executable, "-c", "from labtui.cli import app; app(prog_name='labtui')"]


def test_version_comes_from_the_package_metadata():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"labtui {importlib.metadata.version('labtui')}"
    assert lines[1].startswith(f"torch {torch.__version__} (")
    device = resolve_device("auto")
    assert lines[2] == f"device {device} ({device_name(device)})"  # "device cpu (CPU)" here


def test_show_completion_prints_a_bash_script():
    result = subprocess.run([*LABTUI, "--show-completion", "bash"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "_LABTUI_COMPLETE=complete_bash" in result.stdout
    assert "complete -o default -F _labtui_completion labtui" in result.stdout


def test_completion_answers_with_commands_and_options():
    """What bash gets back when the script above asks on a tab."""

    def complete(words: str) -> list[str]:
        env = dict(
            os.environ,
            _LABTUI_COMPLETE="complete_bash",
            COMP_WORDS=words,
            COMP_CWORD=str(len(words.split()) - 1),
        )
        done = subprocess.run(LABTUI, env=env, capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert complete("labtui sa") == ["sample"]
    assert complete("labtui sample s --check") == ["--checkpoint"]
