"""The layers import only downwards, and the headless parts never load Textual."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys

import pytest

from conftest import ROOT

LAYERS = [  # folder, top-level packages its code must never import
    ("data", {"core", "sessions", "labtui", "textual", "rich"}),
    ("core", {"sessions", "labtui", "textual", "rich", "textual_plotext"}),
    ("sessions", {"labtui", "textual", "textual_plotext"}),
    ("labtui/commands", {"textual"}),
]


def modules_of(package: str) -> list[str]:
    path = ROOT.joinpath(*package.split("."))
    return [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(path)])]


def loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {name.split(".")[0] for name in json.loads(out)}


def imported_packages(path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize(("folder", "forbidden"), LAYERS)
def test_no_upward_import_anywhere_in_the_source(folder, forbidden):
    """Imports inside functions count too: they run later, but they still point upwards."""
    files = sorted(ROOT.joinpath(folder).rglob("*.py"))
    assert files
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in imported_packages(path)
        if name in forbidden
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(("package", "forbidden"), [(f, b) for f, b in LAYERS[:3]])
def test_layers_import_only_downwards(package, forbidden):
    loaded = loaded_after_import(modules_of(package))
    assert not (loaded & forbidden), f"{package} pulled in {sorted(loaded & forbidden)}"


def test_headless_cli_does_not_load_textual():
    loaded = loaded_after_import(["labtui.cli", *modules_of("labtui.commands")])
    assert "textual" not in loaded
