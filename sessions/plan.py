"""Which runs a session holds: its study's cells in the study's order, then the runs added later.

A run's id follows from the study alone (``r<index>-<variant>-s<seed>[-<axis><value>...]``), so
the plan needs no folder per run: a run without a folder is simply pending. Runs added later
(the console's single runs) are one line per add in added.jsonl. Format-1 sessions made every
folder up front and lost the order of the grid's axes: their plan is recovered from both.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

from core.spec import FIELD_NAMES, RunSpec, Study
from sessions import atomic
from sessions.errors import SessionError
from sessions.paths import check_run_id, run_folders, run_id_for, run_index

ADDED = "added.jsonl"


def study_plan(study: Study) -> dict[str, RunSpec | None]:
    """Run id -> spec of a study's runs, in its order: the ids follow from the study alone."""
    axes = study.axes
    return {run_id_for(i, spec, axes): spec for i, spec in enumerate(study.specs())}


def format1_plan(study: Study, runs: Path) -> dict[str, RunSpec | None]:
    """The runs of a format-1 session: it made every run's folder at creation (a kill in
    between lost the rest) and its session.json lost the order of the grid's axes (sorted
    keys). The study's runs come back in the first axis order whose ids the existing folders
    bear (variant-major when they do not tell), then the folders of runs added later."""
    folders = {
        run_id: None for _, run_id in run_folders(runs) if (runs / run_id / "spec.json").exists()
    }
    grid = study.grid
    usual = tuple(sorted(grid, key=FIELD_NAMES.index))  # variant, seed, ...: tried first
    others = itertools.permutations(grid) if len(grid) <= 4 else ()
    for names in dict.fromkeys([usual, *others]):
        ordered = Study(study.base, {n: grid[n] for n in names}, study.order)
        plan: dict[str, RunSpec | None] = study_plan(ordered)
        ids = list(plan)
        if all(ids[i] == r for r in folders if (i := run_index(r)) < len(ids)):
            plan.update(folders)
            return dict(sorted(plan.items(), key=lambda item: run_index(item[0])))
    return folders


def in_grid_order(study: dict[str, Any], order: list[str] | None) -> dict[str, Any]:
    """A study dict with its grid's axes in ``order`` (the order they had when it was created)."""
    grid = study.get("grid")
    if not order or not isinstance(grid, dict) or sorted(order) != sorted(grid):
        return study
    return {**study, "grid": {name: grid[name] for name in order}}


def read_added(path: Path, name: str) -> dict[str, RunSpec]:
    """The runs of added.jsonl (complete lines: a line cut by a kill is dropped)."""
    added: dict[str, RunSpec] = {}
    for number, line in enumerate(atomic.complete_lines(path).splitlines(), start=1):
        try:
            for run in json.loads(line)["runs"]:
                added[check_run_id(run["run_id"])] = RunSpec.from_dict(run["spec"])
        except (ValueError, KeyError, TypeError, SessionError) as err:
            raise SessionError(f"session {name} is broken: {path} line {number}: {err}") from None
    return added


def file_mark(path: Path) -> object:
    """What identifies a file's content cheaply: its size and modification time (None: none)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns)
