"""Issues 3 and 12: the engine against a minimal plain loop, and what the diagnostics cost.

    python benchmarks/bench_engine.py --size default --steps 30 --repeat 3

Training: three loops train the same spec from the same initialization on the same batches,
alternating, --repeat times (medians reported); the first --warmup steps are not timed.
  plain        a minimal eager PyTorch loop that reads its loss back each step
  plain+diag   the same, also taking the engine's per-step diagnostics (gradient norm,
               first-block input norm, max |logit|), read back with the loss in one sync
  engine       core.engine.train (diagnostics, events, ledger; no checkpoints)
Evaluation: one full validation pass (core.metrics.evaluate) with max_attn_logit recorded (its
default) and with the attention scores left out, alternating --eval-repeat times.
Targets: engine / plain <= 1.05 on the CPU.
"""

from __future__ import annotations

import argparse
import time

import common
import torch
from common import Timeline, plain_run

from core.engine import build_model, train
from core.metrics import evaluate
from core.model import GPT

LOOPS = ("plain", "plain+diag", "engine")


class NoAttentionScores(GPT):
    """The GPT with attention-score recording switched off: evaluate's pass without
    max_attn_logit, and nothing else changed."""

    def record_attention(self, on: bool) -> None:
        super().record_attention(False)


def ms_per_step(times: list[float], warmup: int) -> float:
    timed = times[warmup - 1 :]
    return (timed[-1] - timed[0]) / (len(timed) - 1) * 1e3


def time_loop(name: str, spec, corpus, warmup: int) -> float:
    if name == "engine":
        timeline = Timeline()
        train(spec, corpus, timeline, run_id="bench")
        return ms_per_step(timeline.step_times("bench"), warmup)
    times: list[float] = []
    plain_run(spec, corpus, times, diagnostics=name == "plain+diag")
    return ms_per_step(times, warmup)


def time_eval(spec, corpus, repeat: int) -> dict[str, list[float]]:
    """Seconds per validation pass, with and without the attention scores."""
    device = spec.device
    model = build_model(spec, corpus.vocab_size).to(device)
    plain = NoAttentionScores(model.config).to(device)
    plain.load_state_dict(model.state_dict())
    val = corpus.tensor("val", device)
    out: dict[str, list[float]] = {"with attention": [], "without": []}
    for rep in range(repeat + 1):  # the first of each is warm-up
        for key, m in (("with attention", model), ("without", plain))[:: 1 if rep % 2 else -1]:
            common.sync(device)
            t = time.perf_counter()
            metrics = evaluate(m, val, spec.block_size)
            common.sync(device)
            if rep:
                out[key].append(time.perf_counter() - t)
            assert (metrics["max_attn_logit"] > -float("inf")) == (key == "with attention")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", choices=sorted(common.SIZES), default="default")
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--eval-repeat", type=int, default=3, help="timed validation passes")
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
    spec = spec.replace(device=common.resolve_device(spec.device))
    measured: dict[str, list[float]] = {name: [] for name in LOOPS}
    for rep in range(args.repeat):
        order = LOOPS[rep % len(LOOPS) :] + LOOPS[: rep % len(LOOPS)]
        for name in order:
            measured[name].append(time_loop(name, spec, corpus, args.warmup))
    med = {name: common.median(v) for name, v in measured.items()}
    evals = time_eval(spec, corpus, args.eval_repeat)
    ev = {key: common.median(v) for key, v in evals.items()}

    print(f"{args.size} model on {spec.device} ({spec.precision}), {args.steps} timed steps, "
          f"median of {args.repeat}")  # fmt: skip
    rows = [["loop", "ms/step", "vs plain", "runs (ms/step)"]]
    for name in LOOPS:
        runs = " ".join(f"{v:.1f}" for v in measured[name])
        rows.append([name, f"{med[name]:.2f}", f"{med[name] / med['plain']:.3f}", runs])
    rows.append(["", "", "", ""])
    rows.append(["validation pass", "ms/pass", "vs without", "runs (ms/pass)"])
    for key in ("without", "with attention"):
        runs = " ".join(f"{v * 1e3:.0f}" for v in evals[key])
        rows.append([key, f"{ev[key] * 1e3:.1f}", f"{ev[key] / ev['without']:.3f}", runs])
    print(common.table(rows))
    ratio = med["engine"] / med["plain"]
    print(f"engine / plain = {ratio:.3f}  (target <= 1.05); diagnostics alone: "
          f"{med['plain+diag'] / med['plain']:.3f}; max_attn_logit in a validation pass: "
          f"{ev['with attention'] / ev['without']:.3f}")  # fmt: skip
    path = common.save(
        f"engine-{args.size}-{spec.device}",
        {
            "benchmark": "engine", "machine": common.machine(args.device), "args": vars(args),
            "spec": spec.to_dict(), "ms_per_step": measured, "median_ms": med,
            "ratio": ratio, "eval_s": evals, "eval_median_s": ev,
        },
    )  # fmt: skip
    print(f"saved {path}")


if __name__ == "__main__":
    main()
