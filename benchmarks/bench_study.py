"""Issue 7: one study several ways, in one process: plain loop, engine run by run, grouped.

    python benchmarks/bench_study.py --device cuda --size default          # the 15-run study
    python benchmarks/bench_study.py --device cpu --size default --iters 20

Every way trains the same runs (3 variants x --runs/3 seeds) from the same initializations on
the same batches, evaluates on the full validation split every --eval steps and at the end,
and (engine, grouped) makes the engine's checkpoints. A short warm-up of each way comes first.
Ways: plain (a minimal loop), engine (core.engine.train, run by run), grouped
(core.grouped.train_group: CUDA graphs on CUDA), grouped-eager (the same without graphs).
Reported: ms per run-step (training time / (runs x iters), evaluation excluded), seconds of
evaluation, wall seconds for the whole study, and each way's ratio to the plain loop.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings

import common
import torch
from common import Timeline, plain_run

from core.engine import train
from core.grouped import GRAPH_WARMUP, GroupJob, train_group
from core.spec import PROTOCOL_VARIANTS

WAYS = ("plain", "engine", "grouped", "grouped-eager")


def study_specs(base, runs: int) -> list:
    """The default study's runs: the protocol's 3 variants x runs/3 seeds."""
    return [base.replace(variant=v, seed=s) for v in PROTOCOL_VARIANTS for s in range(runs // 3)]


def run_name(spec) -> str:
    return f"{spec.variant}-s{spec.seed}"


@contextlib.contextmanager
def cuda_graphs(on: bool):
    """LABTUI_CUDA_GRAPHS set for the duration (core.grouped reads it for each group)."""
    old = os.environ.get("LABTUI_CUDA_GRAPHS")
    os.environ["LABTUI_CUDA_GRAPHS"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LABTUI_CUDA_GRAPHS", None)
        else:
            os.environ["LABTUI_CUDA_GRAPHS"] = old


def run_way(way: str, specs, corpus) -> dict:
    """Train the study one way: {"study_s", "train_s", "eval_s", "val_loss": {run: loss},
    "warnings": [...]} (a grouped study that could not use a CUDA graph says so there)."""
    device = specs[0].device
    common.sync(device)
    with cuda_graphs(way != "grouped-eager"), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", RuntimeWarning)
        t0 = time.perf_counter()
        if way == "plain":
            parts = [plain_run(spec, corpus) for spec in specs]
            eval_s = sum(p["eval_s"] for p in parts)
            losses = [p["val_loss"] for p in parts]
        else:
            timeline = Timeline()
            jobs = [GroupJob(run_name(s), s) for s in specs]
            if way == "engine":
                results = [train(job.spec, corpus, timeline, run_id=job.run_id) for job in jobs]
            else:
                results = train_group(jobs, corpus, timeline)
            bad = [r for r in results if r.status != "finished"]
            if bad:
                r = bad[0]
                raise SystemExit(f"{way}: run {r.run_id} ended {r.status}: {r.error}")
            eval_s = timeline.eval_s()
            losses = [r.val_loss for r in results]
        common.sync(device)
        study_s = time.perf_counter() - t0
    return {
        "study_s": study_s,
        "train_s": study_s - eval_s,
        "eval_s": eval_s,
        "val_loss": {run_name(s): loss for s, loss in zip(specs, losses, strict=True)},
        "warnings": sorted({str(w.message) for w in seen}),
    }


def warm_up(way: str, specs, corpus) -> None:
    """One-time costs (allocator, kernels, CUDA context, graph capture) out of the timings."""
    warm = [s.replace(iters=GRAPH_WARMUP + 2, eval_interval=0) for s in specs]
    run_way(way, warm if way.startswith("grouped") else warm[:1], corpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", choices=sorted(common.SIZES), default="default")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--runs", type=int, default=15, help="a multiple of 3 (variants x seeds)")
    ap.add_argument("--eval", type=int, default=100, help="eval interval (0: at the end only)")
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"),
                    help="default: tf32 on CUDA, fp32 elsewhere")  # fmt: skip
    ap.add_argument(
        "--ways", default=",".join(WAYS), help="comma-separated subset of " + ",".join(WAYS)
    )
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repetitions (median)")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--corpus", help="path to input.txt (default: $LABTUI_DATA, cache)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ways = [w for w in args.ways.split(",") if w]
    if any(w not in WAYS for w in ways) or args.runs % 3:
        ap.error(f"--ways takes {', '.join(WAYS)}; --runs must be a multiple of 3")

    corpus = common.load(args.corpus)
    base = common.base_spec(args.size, args.device, args.precision, iters=args.iters,
                            eval_interval=args.eval)  # fmt: skip
    specs = study_specs(base, args.runs)
    for way in ways:
        warm_up(way, specs, corpus)

    measured: dict[str, list[dict]] = {w: [] for w in ways}
    for rep in range(args.repeat):
        order = ways[rep % len(ways) :] + ways[: rep % len(ways)]
        for way in order:
            measured[way].append(run_way(way, specs, corpus))
            print(f"  {way}: {measured[way][-1]['study_s']:.1f} s", flush=True)

    run_steps = len(specs) * args.iters
    summary = {}
    for way in ways:
        timed = ("study_s", "train_s", "eval_s")
        summary[way] = {k: common.median([m[k] for m in measured[way]]) for k in timed}
        summary[way]["ms_per_run_step"] = summary[way]["train_s"] / run_steps * 1e3
    ref = summary.get("plain")
    rows = [["way", "ms/run-step", "eval s", "study s", "train vs plain", "study vs plain"]]
    for way in ways:
        s = summary[way]
        rows.append([
            way, f"{s['ms_per_run_step']:.2f}", f"{s['eval_s']:.1f}", f"{s['study_s']:.1f}",
            f"{ref['train_s'] / s['train_s']:.2f}x" if ref else "-",
            f"{ref['study_s'] / s['study_s']:.2f}x" if ref else "-",
        ])  # fmt: skip
    print(
        f"{args.size} model, {len(specs)} runs x {args.iters} steps (batch {base.batch_size}), "
        f"eval every {args.eval or args.iters}, {base.device} {base.precision}, "
        f"median of {args.repeat}; 'vs plain' = speed-up over the plain loop"
    )
    print(common.table(rows))
    path = common.save(
        f"study-{args.size}-{base.device}",
        {
            "benchmark": "study", "machine": common.machine(args.device), "args": vars(args),
            "spec": base.to_dict(), "runs": len(specs), "measured": measured,
            "summary": summary,
        },
    )  # fmt: skip
    print(f"saved {path}")


if __name__ == "__main__":
    main()
