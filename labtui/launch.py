"""`labtui` with no subcommand: start as `labtui run` does (sessions.startup: the executor, the
corpus, the session opened and checked against the corpus), then run the console.

The console opens a session it cannot write read-only, to be watched as it is (another live
process writes it, or its folder is on a read-only file system): `labtui --session NAME` and
the session browser alike.
"""

from __future__ import annotations

import errno
import sys

READ_ONLY_ERRORS = (errno.EROFS, errno.EACCES, errno.EPERM)  # the folder cannot be written


def open_for_console(root, name: str, corpus):
    """Session ``name`` checked against ``corpus``: for writing, else read-only. Returns it and
    why it is read-only ("is being written by pid N on HOST", "cannot be written (...)"), None
    when it is writable.
    Raises SessionError (missing, broken, another corpus) or OSError."""
    from labtui.errors import error_line
    from sessions.startup import open_session
    from sessions.store import Session

    with Session.open(root, name) as probe:
        writer = probe.writer()
    if writer is not None:
        return open_session(root, name, corpus, write=False), f"is being written by {writer}"
    try:
        return open_session(root, name, corpus), None
    except OSError as err:
        if err.errno not in READ_ONLY_ERRORS:
            raise
        why = f"cannot be written ({error_line(err)})"
        return open_session(root, name, corpus, write=False), why


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
    from sessions.startup import start_executor
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
        opened, why = (None, None) if session is None else open_for_console(root, session, corpus)
    except SessionError as err:
        fail(str(err))
    from labtui.app import LabApp

    app = LabApp(
        corpus=corpus,
        session=opened,
        read_only_why=why,
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
    if app.return_code:  # the console crashed (Textual printed why)
        raise SystemExit(app.return_code)
