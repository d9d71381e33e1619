"""`labtui` with no subcommand: start as `labtui run` does (sessions.startup: the executor, the
corpus, the session opened and checked against the corpus), then run the console."""

from __future__ import annotations

import sys


def run_console(
    data=None,
    session=None,
    root=None,
    device: str = "auto",
    executor: str = "local",
    address: str | None = None,
    gpus_per_run: float | None = None,
    group: bool | None = None,
) -> None:
    """Start, then run the console until it quits. Bad input: one line, exit 2."""
    from core.spec import RunSpec, SpecError
    from labtui.commands.data_cmd import load_or_fail
    from labtui.commands.options import check_ray_flags
    from labtui.errors import fail
    from sessions.startup import open_session, start_executor
    from sessions.store import SessionError

    check_ray_flags(executor, address, gpus_per_run)
    try:
        base = RunSpec(device=device)
    except SpecError as err:
        fail(str(err))
    if executor == "ray":
        print("starting Ray…", file=sys.stderr)
    try:
        the_executor = start_executor(
            executor, group=group, address=address, gpus_per_run=gpus_per_run, device=device
        )
    except SessionError as err:
        fail(str(err))
    corpus = load_or_fail(data, progress=True)
    try:
        opened = open_session(root, session, corpus) if session is not None else None
    except SessionError as err:
        fail(str(err))
    from labtui.app import LabApp

    app = LabApp(
        corpus=corpus,
        session=opened,
        root=root,
        base_spec=base,
        device=device,
        executor=the_executor,
        executor_label=the_executor.describe() if executor == "ray" else None,
    )
    try:
        app.run()
    finally:
        if app.session is not None:
            app.session.close()
