"""The README's commands are the ones CI runs."""

from __future__ import annotations

import re

from conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv[^\n]+)\n```", text)


def test_readme_first_screen_has_the_two_fresh_machine_commands():
    main, tests = readme_commands()[:2]
    assert main.endswith("labtui --data ../shared/data/tinyshakespeare/input.txt")
    assert "pytest" in tests and "torch==2.13.0" in tests


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci
