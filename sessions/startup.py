"""One start-up path for both front ends (the console and `labtui run`): the corpus, the
study's precision, the session (created with its provenance, or opened and checked against the
corpus) and the runs added to it later. Errors are raised as DataError, SpecError or
SessionError, each one line; the front end decides how to show them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.device import resolve_precision
from core.spec import Study
from sessions.executors import Executor, make_executor
from sessions.provenance import collect
from sessions.store import Session, SessionError


def resolve_study(study: Study) -> Study:
    """The study with every "auto" precision resolved for its device (tf32 on CUDA, else fp32),
    so that a session records the precision its runs train in, whichever front end made it."""
    device = study.base.device
    base = study.base.replace(precision=resolve_precision(study.base.precision, device))
    grid = dict(study.grid)
    if "precision" in grid:
        grid["precision"] = tuple(
            dict.fromkeys(resolve_precision(p, device) for p in grid["precision"])
        )
    return Study(base=base, grid=grid, order=study.order, description=study.description)


def start_executor(name: str = "local", **options: Any) -> Executor:
    """``make_executor(name, **options)``, connected: Ray is started or joined here, so that a
    bad address is one clear error before any session is written."""
    executor = make_executor(name, **options)
    if name == "ray":
        executor.connect()
    return executor


def create_session(
    root: Path | str | None,
    study: Study,
    corpus: Any,
    *,
    name: str | None = None,
    executor: Any = None,
) -> Session:
    """A new session for ``study`` (precision resolved), its provenance recorded."""
    study = resolve_study(study)
    provenance = collect(
        corpus,
        study.base.device,
        executor=getattr(executor, "name", "local"),
        grouped=getattr(executor, "group", None),
    )
    return Session.create(root, study, name=name, provenance=provenance)


def open_session(root: Path | str | None, name: str, corpus: Any, *, write: bool = True) -> Session:
    """An existing session, refused when ``corpus`` is not the one it was trained on."""
    session = Session.open(root, name, write=write)
    want = session.provenance.get("corpus_sha256")
    if corpus is not None and want and want != corpus.sha256:
        session.close()
        raise SessionError(
            f"this corpus (sha256 {corpus.sha256[:12]}) is not session {session.name}'s "
            f"({want[:12]})"
        )
    return session


def add_study(session: Session, study: Study) -> list[str]:
    """Append a study's runs (precision resolved) to an open session; returns their ids."""
    return session.add_runs(resolve_study(study).specs())
