"""Issue 3: the engine against a minimal plain PyTorch loop, same model and batches, one process.

    python benchmarks/bench_engine.py --size default --steps 30 --repeat 3

Both train the same spec from the same initialization on the same batches; the first --warmup
steps of each are not timed. The two alternate --repeat times; medians are reported.
"""

from __future__ import annotations

import argparse

import common
import torch
from common import Timeline, plain_run

from core.engine import train


def ms_per_step(times: list[float], warmup: int) -> float:
    timed = times[warmup - 1 :]
    return (timed[-1] - timed[0]) / (len(timed) - 1) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", choices=sorted(common.SIZES), default="default")
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"))
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--corpus", help="path to input.txt (default: $LABTUI_DATA, cache)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    corpus = common.load(args.corpus)
    spec = common.base_spec(
        args.size, args.device, args.precision,
        iters=args.warmup + args.steps, eval_interval=0, checkpoint_interval=0,
    )  # fmt: skip
    plain, engine = [], []
    for rep in range(args.repeat):
        order = ("plain", "engine") if rep % 2 == 0 else ("engine", "plain")
        for name in order:
            if name == "plain":
                times: list[float] = []
                plain_run(spec, corpus, times)
                plain.append(ms_per_step(times, args.warmup))
            else:
                timeline = Timeline()
                train(spec, corpus, timeline, run_id="bench")
                engine.append(ms_per_step(timeline.step_times("bench"), args.warmup))
    p, e = common.median(plain), common.median(engine)
    print(f"{args.size} model on {spec.device} ({spec.precision}), {args.steps} timed steps, "
          f"median of {args.repeat}")  # fmt: skip
    print(
        common.table(
            [
                ["loop", "ms/step", "runs (ms/step)"],
                ["plain PyTorch", f"{p:.2f}", " ".join(f"{v:.1f}" for v in plain)],
                ["core.engine", f"{e:.2f}", " ".join(f"{v:.1f}" for v in engine)],
            ]
        )
    )
    print(f"engine / plain = {e / p:.3f}  (target <= 1.05)")
    path = common.save(
        f"engine-{args.size}-{spec.device}",
        {
            "benchmark": "engine", "machine": common.machine(args.device), "args": vars(args),
            "spec": spec.to_dict(), "plain_ms": plain, "engine_ms": engine,
            "plain_median_ms": p, "engine_median_ms": e, "ratio": e / p,
        },
    )  # fmt: skip
    print(f"saved {path}")


if __name__ == "__main__":
    main()
