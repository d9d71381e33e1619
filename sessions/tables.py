"""A session's tables: results.csv, each run's metrics.csv and evals.csv, and their exports.

Stable columns (README):

results.csv / ``export --what results``:
    run_id, variant, seed, status, val_loss, val_bpc, val_ppl, best_val_loss, final_grad_norm,
    accuracy, macro_accuracy, embed_norm, max_logit, max_attn_logit, max_grad_norm, loss_spikes,
    grad_spikes, diverged_step, n_params, iters, tokens, wall_s, device, precision,
    then one column per swept study field other than variant and seed (e.g. lr, n_embd).
    iters is the planned number of steps, tokens the training tokens actually seen, device and
    precision what the run trained on; metrics are empty when the run never got there.
metrics.csv (one row per optimizer step):
    step, tokens, elapsed_s, loss, grad_norm, embed_norm, lr, tokens_per_s, max_logit
evals.csv (one row per full validation pass):
    step, tokens, elapsed_s, val_loss, val_bpc, val_ppl, max_logit, max_attn_logit
(core.metrics defines every metric.)
``export --what metrics|evals`` puts run_id, variant, seed and the swept fields first; a swept
field named like a column of the file gets a "spec_" prefix (an lr sweep: spec_lr is the
run's peak lr, lr the scheduled lr of each step).

results.csv is rebuilt from the runs' result.json files, which are the source of truth.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.spec import FIELD_NAMES, RunSpec, Study
from sessions import atomic
from sessions.errors import SessionError
from sessions.paths import run_folders
from sessions.records import read_result

if TYPE_CHECKING:
    import pandas as pd

    from sessions.store import Session

RESULT_COLUMNS = (
    "run_id", "variant", "seed", "status", "val_loss", "val_bpc", "val_ppl", "best_val_loss",
    "final_grad_norm", "accuracy", "macro_accuracy", "embed_norm", "max_logit", "max_attn_logit",
    "max_grad_norm", "loss_spikes", "grad_spikes", "diverged_step", "n_params", "iters", "tokens",
    "wall_s", "device", "precision",
)  # fmt: skip
METRIC_COLUMNS = (
    "step", "tokens", "elapsed_s", "loss", "grad_norm", "embed_norm", "lr", "tokens_per_s",
    "max_logit",
)  # fmt: skip
EVAL_COLUMNS = (
    "step", "tokens", "elapsed_s", "val_loss", "val_bpc", "val_ppl", "max_logit", "max_attn_logit",
)  # fmt: skip
EXPORTS = ("results", "metrics", "evals")


def swept(study: Study, specs: list[RunSpec]) -> list[str]:
    """Swept fields other than variant and seed: the study's axes plus any that vary."""
    names = list(study.axes)
    for name in FIELD_NAMES:
        varies = len({repr(getattr(s, name)) for s in specs}) > 1
        if varies and name not in names and name not in ("variant", "seed"):
            names.append(name)
    return names


def axes(study: Study, specs: list[RunSpec]) -> list[str]:
    """The swept fields that are not result columns already (iters and precision are)."""
    return [n for n in swept(study, specs) if n not in RESULT_COLUMNS]


def results(session: Session) -> pd.DataFrame:
    """One row per run with a result, columns RESULT_COLUMNS + swept fields."""
    import pandas as pd

    columns = [*RESULT_COLUMNS, *session.axes()]
    return pd.DataFrame(_result_rows(session, columns), columns=columns)


def write_results_csv(session: Session) -> None:
    """Rebuild results.csv from the runs' result.json files."""
    columns = [*RESULT_COLUMNS, *session.axes()]
    atomic.write_csv(
        session.path / "results.csv",
        columns,
        ([("" if v is None else v) for v in row] for row in _result_rows(session, columns)),
    )


def read_run_csv(path: Path, columns: tuple[str, ...], where: str) -> pd.DataFrame:
    """A run's metrics.csv or evals.csv, every value a number (or empty); ``where`` names the
    run in errors. Its header holds "step" and some of ``columns`` (older sessions have fewer).

    A last line without its newline is what a kill mid-write leaves: it is dropped. Any other
    row that does not parse (a wrong number of fields, a value that is not a number) is an
    error naming the file and the line: corrupt data is never exported as data.
    """
    import pandas as pd

    try:
        text = atomic.complete_lines(path)
    except UnicodeDecodeError as err:
        raise SessionError(f"{where} is broken: {path} is not text ({err.reason})") from None
    if not text.strip():
        return pd.DataFrame(columns=list(columns))
    rows = csv.reader(io.StringIO(text))
    header = next(rows)
    known = set(header) <= set(columns) and len(set(header)) == len(header)
    if not known or "step" not in header:  # a subset: older sessions have fewer columns
        raise SessionError(
            f"{where} is broken: {path} line 1: header {','.join(header)!r} is not step and "
            f"others of {','.join(columns)}, each once"
        )
    width = len(header)
    for number, row in enumerate(rows, start=2):
        if len(row) != width:
            raise SessionError(
                f"{where} is broken: {path} line {number}: {len(row)} values, not {width}"
            )
    try:
        raw = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,  # an empty cell stays "" (no value), not NaN
            skip_blank_lines=False,
            index_col=False,
        )
    except (ValueError, pd.errors.ParserError) as err:
        raise SessionError(f"{where} is broken: {path}: {err}") from None
    frame = pd.DataFrame(index=raw.index)
    for name in raw.columns:
        cells = raw[name]
        numbers = pd.to_numeric(cells.where(cells != ""), errors="coerce")
        bad = numbers.isna() & (cells != "")
        bad &= ~cells.str.strip().str.lower().isin(("nan", "+nan", "-nan"))
        if name == "step":
            bad |= numbers.isna() | (numbers != numbers.round())
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise SessionError(
                f"{where} is broken: {path} line {row + 2}: {name} {cells.iloc[row]!r} is not "
                + ("an integer" if name == "step" else "a number")
            )
        frame[name] = numbers.astype("int64") if name == "step" else numbers
    return frame


def export(session: Session, what: str = "results") -> pd.DataFrame:
    """results, or every run's metrics / evals with run_id, variant, seed (+ axes) first."""
    import pandas as pd

    if what not in EXPORTS:
        raise SessionError(f"unknown export {what!r}: choose {', '.join(EXPORTS)}")
    if what == "results":
        return results(session)
    columns, read = (
        (METRIC_COLUMNS, session.metrics) if what == "metrics" else (EVAL_COLUMNS, session.evals)
    )
    specs = [session.spec(run_id) for run_id in session.run_ids()]
    fields = ["variant", "seed", *swept(session.study, specs)]
    keys = ["run_id", *(f"spec_{f}" if f in columns else f for f in fields)]
    frames = []
    for run_id in session.run_ids():
        frame = read(run_id)
        if frame.empty:
            continue
        spec = session.spec(run_id)
        frame.insert(0, "run_id", run_id)
        for i, (key, name) in enumerate(zip(keys[1:], fields, strict=True)):
            frame.insert(i + 1, key, getattr(spec, name))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*keys, *columns])
    return pd.concat(frames, ignore_index=True)


def _result_rows(session: Session, columns: list[str]) -> list[list[Any]]:
    started = {name for _, name in run_folders(session.path / "runs")}  # the others have none
    rows = []
    for run_id in session.run_ids():
        if run_id not in started:
            continue
        result = read_result(session.run_dir(run_id) / "result.json")
        if result is None:
            continue
        spec = session.spec(run_id)
        values = {**spec.to_dict(), **result.to_dict(), "run_id": run_id, "iters": spec.iters}
        rows.append([values.get(c) for c in columns])
    return rows
