"""`labtui run`: run a study headless into a session folder, or finish one with --resume."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from core.spec import (
    FIELD_NAMES,
    MAX_RUNS,
    MAX_RUNS_CEILING,
    RunSpec,
    SpecError,
    Study,
    check_size,
)
from core.status import RESUMABLE, RunStatus
from labtui.commands.options import (
    AddressOption,
    DataOption,
    ExecutorOption,
    GpusPerRunOption,
    GroupOption,
    RootOption,
    check_device,
    check_ray_flags,
)
from labtui.errors import fail

# flag -> (RunSpec field, type); each takes one value or a comma list (a swept grid axis)
GRID_FLAGS: dict[str, tuple[str, type]] = {
    "variants": ("variant", str),
    "seeds": ("seed", int),
    "iters": ("iters", int),
    "lr": ("lr", float),
    "layers": ("n_layer", int),
    "width": ("n_embd", int),
    "heads": ("n_head", int),
    "context": ("block_size", int),
    "batch": ("batch_size", int),
    "dropout": ("dropout", float),
    "weight_decay": ("weight_decay", float),
    "schedule": ("schedule", str),
    "warmup": ("warmup_iters", int),
    "min_lr": ("min_lr", float),
    "grad_clip": ("grad_clip", float),
    "eval_interval": ("eval_interval", int),
    "checkpoint_interval": ("checkpoint_interval", int),
    "precision": ("precision", str),
}


def parse_values(flag: str, text: str, kind: type) -> list[Any]:
    """ "0,1,2" -> [0, 1, 2]; integer flags also take ranges such as "0-4", kept as ``range``
    objects (``expand`` builds them, once ``count`` has said how many values they hold)."""
    values: list[Any] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise SpecError(f"--{flag.replace('_', '-')}: empty value in {text!r}")
        try:
            if kind is int and "-" in item[1:]:
                low, high = (int(x) for x in item.split("-", 1))
                if high < low:
                    raise ValueError
                values.append(range(low, high + 1))
            else:
                values.append(kind(item))
        except ValueError:
            name = {int: "an integer", float: "a number"}.get(kind, "a value")
            raise SpecError(f"--{flag.replace('_', '-')}: {item!r} is not {name}") from None
    return values


def count(values: list[Any]) -> int:
    return sum(v.stop - v.start if isinstance(v, range) else 1 for v in values)


def expand(values: list[Any]) -> tuple[Any, ...]:
    return tuple(x for v in values for x in (v if isinstance(v, range) else (v,)))


def build_study(
    study_text: str | None = None,
    flags: dict[str, str] | None = None,
    *,
    order: str | None = None,
    device: str | None = None,
    max_runs: int = MAX_RUNS,
) -> Study:
    """The study of a TOML text (default: the protocol) with flag values laid over it.

    A flag with one value sets the base spec (and drops that field from the grid), a comma
    list makes it a grid axis; variants and seeds always stay grid axes. The study's runs are
    counted before any is built: more than ``max_runs`` is refused. Raises SpecError.
    """
    study = Study.from_toml(study_text) if study_text is not None else Study()
    base = study.base.to_dict()
    grid: dict[str, list[Any]] = {name: list(values) for name, values in study.grid.items()}
    for flag, text in (flags or {}).items():
        name, kind = GRID_FLAGS[flag]
        values = parse_values(flag, text, kind)
        first = values[0][0] if isinstance(values[0], range) else values[0]
        base[name] = first  # a valid base even when only the swept cells are
        if name in ("variant", "seed") or count(values) > 1:
            grid[name] = values
        else:
            grid.pop(name, None)
    if device is not None:
        base["device"] = device
        grid.pop("device", None)
    runs = math.prod(count(values) for values in grid.values())
    try:
        check_size(runs, max_runs)
    except SpecError as err:
        if max_runs <= MAX_RUNS_CEILING:  # the limit was the user's: one they can raise
            err = SpecError(f"{err} (--max-runs N raises it, up to {MAX_RUNS_CEILING:,})")
        raise err from None
    built = {name: expand(values) for name, values in grid.items()}
    for name in built:  # swept fields: the base takes the first value
        if name in FIELD_NAMES and built[name]:
            base[name] = built[name][0]
    try:
        spec = RunSpec.from_dict(base)
    except TypeError as err:
        raise SpecError(str(err)) from None
    study = Study(base=spec, grid=built, order=order or study.order, description=study.description)
    study.check(max_runs)
    return study


def run(
    study: Annotated[
        Path | None,
        typer.Option(
            "--study",
            help="Study TOML file ([base], [grid], order). Grid flags given as well override the "
            "file: one value sets the base spec, a comma list replaces that grid axis.",
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="A built-in study (`labtui studies` lists them); grid flags override it as they "
            "override --study.",
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Finish this session: interrupted runs from their checkpoint, pending ones from "
            "scratch; finished runs are skipped.",
        ),
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="With --resume: rerun failed runs.")
    ] = False,
    session: Annotated[
        str | None,
        typer.Option("--session", help="Name of the new session (default: date-time-random)."),
    ] = None,
    root: RootOption = None,
    data: DataOption = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")
    ] = None,
    variants: Annotated[
        str | None, typer.Option("--variants", help="e.g. none,layernorm,rmsnorm")
    ] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="e.g. 0,1,2 or 0-4")] = None,
    iters: Annotated[str | None, typer.Option("--iters", help="Optimizer steps per run.")] = None,
    lr: Annotated[str | None, typer.Option("--lr", help="Peak learning rate.")] = None,
    layers: Annotated[str | None, typer.Option("--layers", help="Transformer blocks.")] = None,
    width: Annotated[str | None, typer.Option("--width", help="Embedding width (n_embd).")] = None,
    heads: Annotated[str | None, typer.Option("--heads", help="Attention heads.")] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="Context length (block_size).")
    ] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="Sequences per batch.")] = None,
    dropout: Annotated[str | None, typer.Option("--dropout")] = None,
    weight_decay: Annotated[str | None, typer.Option("--weight-decay")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="constant or cosine.")] = None,
    warmup: Annotated[str | None, typer.Option("--warmup", help="Linear warmup steps.")] = None,
    min_lr: Annotated[
        str | None, typer.Option("--min-lr", help="Final lr of the cosine schedule.")
    ] = None,
    grad_clip: Annotated[
        str | None, typer.Option("--grad-clip", help="Max gradient norm; 0 = off.")
    ] = None,
    eval_interval: Annotated[
        str | None,
        typer.Option("--eval-interval", help="Validation pass every N steps (0 = end only)."),
    ] = None,
    checkpoint_interval: Annotated[
        str | None,
        typer.Option("--checkpoint-interval", help="Resumable checkpoint every N steps."),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="fp32, tf32 or bf16 (default: tf32 on CUDA, else fp32)."),
    ] = None,
    order: Annotated[
        str | None,
        typer.Option(
            "--order", help="grid (variant-major) or interleaved (seed-major: every variant early)."
        ),
    ] = None,
    max_runs: Annotated[
        int,
        typer.Option(
            "--max-runs",
            help="Refuse a study of more runs than this (a guard against typos such as "
            f"--seeds 0-1000000000); no study may have more than {MAX_RUNS_CEILING:,}.",
        ),
    ] = MAX_RUNS,
    group: GroupOption = None,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    gpus_per_run: GpusPerRunOption = None,
) -> None:
    """Run a study (a TOML file, flags, or the default protocol) into a new session folder.

    Every list flag takes one value or a comma list (a grid axis), e.g. --lr 1e-3,3e-4.
    Ctrl-C cancels the run in flight (saved, resumable) and stops.
    """
    options = dict(locals())
    given = {k: v for k, v in options.items() if k in GRID_FLAGS and v is not None}
    from sessions.store import SessionError

    if resume is not None and (study or preset or given or order or session):
        fail(
            "--resume takes no study, preset, grid flags, --order or --session: "
            "the session has its study"
        )
    if study is not None and preset is not None:
        fail("give --study FILE or --preset NAME, not both")
    if retry_failed and resume is None:
        fail("--retry-failed needs --resume SESSION")
    if max_runs < 1:
        fail(f"--max-runs must be at least 1, got {max_runs}")
    if resume is None:
        text = None
        if preset is not None:
            from core.presets import preset_text

            try:
                text = preset_text(preset)
            except SpecError as err:
                fail(str(err))
        if study is not None:
            try:
                text = study.read_text()
            except (OSError, UnicodeDecodeError) as err:
                fail(f"cannot read study file {study}: {getattr(err, 'strerror', None) or err}")
        try:
            the_study = build_study(text, given, order=order, device=device, max_runs=max_runs)
        except SpecError as err:
            fail(str(err))
        check_device(the_study.base.device)
    elif device is not None:
        try:
            RunSpec(device=device)
        except SpecError as err:
            fail(str(err))
        check_device(device)
    from sessions.startup import create_session, open_session, start_executor

    check_ray_flags(executor, address, gpus_per_run)
    try:
        the_executor = start_executor(
            executor,
            group=group,
            address=address,
            gpus_per_run=gpus_per_run,
            device=the_study.base.device if resume is None else device or "auto",
        )
    except SessionError as err:
        fail(str(err))
    corpus = _load_corpus(data)
    if resume is None:
        _check_corpus(corpus, the_study)

    try:
        if resume is not None:
            the_session = open_session(root, resume, corpus)
        else:
            the_session = create_session(
                root, the_study, corpus, name=session, executor=the_executor
            )
    except SessionError as err:
        fail(str(err))
    if resume is not None:
        try:
            _check_corpus(corpus, the_session.study)
        except typer.Exit:
            the_session.close()
            raise
    try:
        _run_queue(
            the_session, corpus, retry_failed, group, the_executor, device if resume else None
        )
    finally:
        the_session.close()


def _run_queue(session, corpus, retry_failed, group, executor, device) -> None:
    from rich.console import Console

    from labtui.commands.progress import RunProgress, results_table
    from sessions.runner import StudyRunner

    runner = StudyRunner(session, corpus, group=group, executor=executor, device=device)
    records = {r.run_id: r for r in session.runs()}
    todo = runner.todo(retry_failed=retry_failed)
    out = Console()
    if not todo:
        counts = _counts(records.values())
        print(f"nothing to run in {session.name}: {counts}", file=sys.stderr)
        out.print(f"session: {session.path}", markup=False, highlight=False, soft_wrap=True)
        return
    plan = {}
    for run_id in todo:
        record = records[run_id]
        resumes = record.status in RESUMABLE
        plan[run_id] = record.spec.iters - (record.step if resumes else 0)
    errors: list[BaseException] = []
    cancelled = threading.Event()
    with RunProgress(plan) as progress:
        runner.on_event = progress.on_event

        def work() -> None:
            try:
                runner.run(todo, retry_failed=retry_failed)
            except BaseException as err:  # shown by the main thread
                errors.append(err)

        def on_sigint(signum, frame) -> None:
            if cancelled.is_set():
                progress.note("aborted: the run in flight is left interrupted")
                os._exit(130)
            cancelled.set()
            progress.note("cancelling: saving the run in flight (Ctrl-C again to abort)")
            runner.cancel_all()

        worker = threading.Thread(target=work, name="labtui-run", daemon=True)
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_sigint) if main else None
        try:
            worker.start()
            while worker.is_alive():
                worker.join(0.1)  # short waits keep the Ctrl-C handler prompt
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
    if errors:
        from core.events import SinkError
        from sessions.store import SessionError

        if isinstance(errors[0], SinkError):
            cause = errors[0].__cause__
            what = (
                errors[0]
                if isinstance(cause, OSError)
                else f"cannot write session {session.name} ({errors[0]})"
            )
            fail(
                f"{what}; the study stopped, its runs are saved up to their last checkpoint:"
                f" once that is fixed, `labtui run --resume {session.name}` goes on from there"
            )
        if isinstance(errors[0], SessionError):
            fail(str(errors[0]))
        raise errors[0]
    out.print(results_table(session.results()))
    out.print(f"session: {session.path}", markup=False, highlight=False, soft_wrap=True)
    if cancelled.is_set():
        print(f"cancelled: resume with `labtui run --resume {session.name}`", file=sys.stderr)
        raise typer.Exit(130)
    lost = [r for r, status in progress.ended.items() if status == RunStatus.INTERRUPTED]
    if lost:  # a Ray worker or node died under these runs; their checkpoints are here
        print(
            f"labtui: {len(lost)} run(s) interrupted, see {session.path}/runs/{lost[0]}/error.txt;"
            f" resume with `labtui run --resume {session.name}`",
            file=sys.stderr,
        )
    failed = [r for r, status in progress.ended.items() if status == RunStatus.FAILED]
    if failed:
        print(
            f"labtui: {len(failed)} run(s) failed, see {session.path}/runs/{failed[0]}/error.txt",
            file=sys.stderr,
        )
        raise typer.Exit(1)
    if lost:
        raise typer.Exit(1)


def _counts(records) -> str:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def _check_corpus(corpus, study: Study) -> None:
    """A corpus too short for the study's context is refused before anything trains."""
    context = max(study.grid.get("block_size", (study.base.block_size,)))
    if len(corpus.train) <= context or len(corpus.val) < 2:
        fail(
            f"the corpus is too short for a context of {context}: its training split has "
            f"{len(corpus.train):,} tokens and needs more than {context} (a longer text, or a "
            f"smaller --context)"
        )


def _load_corpus(path: Path | None):
    from labtui.commands.data_cmd import load_or_fail

    return load_or_fail(path, progress=True)
