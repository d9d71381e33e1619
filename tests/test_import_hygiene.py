"""The layers import only downwards, and the headless parts never load Textual."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

from conftest import ROOT


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


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("data", {"core", "sessions", "labtui", "textual", "rich"}),
        ("core", {"sessions", "labtui", "textual", "rich", "textual_plotext"}),
        ("sessions", {"labtui", "textual", "textual_plotext"}),
    ],
)
def test_layers_import_only_downwards(package, forbidden):
    loaded = loaded_after_import(modules_of(package))
    assert not (loaded & forbidden), f"{package} pulled in {sorted(loaded & forbidden)}"


def test_headless_cli_does_not_load_textual():
    loaded = loaded_after_import(["labtui.cli", *modules_of("labtui.commands")])
    assert "textual" not in loaded
