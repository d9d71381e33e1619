"""Issue 14's numbers, speed and scale on a GPU; benchmarks/gpu_check.sh runs it.

    python benchmarks/gpu_check.py measure --out DIR [--budget S]   # numbers, speed, scale, profile
    python benchmarks/gpu_check.py cpu-reference --out DIR          # seed 0 on the CPU (fp32)
    python benchmarks/gpu_check.py report --out DIR --tests cuda=0,suite=0   # the one table

measure, in order, each stage skipped (and said so) when the --budget left cannot hold it:
  speed    the default study (3 variants x --runs/3 seeds x --iters steps, full evaluation at
           the end) after a warm-up, for each precision (fp32, tf32, bf16) and way (engine run
           by run, grouped eager, grouped with CUDA graphs): wall s, ms per study step.
  numbers  from the same runs: grouped (both ways) against the engine, run by run, fp32
  scale    grouped at --scale runs (with CUDA graphs, the default precision): s per run
  profile  when grouped misses its target (<= 5 s tf32, <= 7 s fp32): torch.profiler over a
           few steps of that way, the operations that dominate
report reads what measure and cpu-reference wrote, compares the GPU's seed-0 losses with the
CPU's, prints one table and writes gpu_check.csv; gpu_check.json holds every raw number.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import time
from pathlib import Path

import common
import torch
from bench_study import cuda_graphs, run_name, run_way, study_specs, warm_up

from core.engine import train
from core.grouped import GRAPH_WARMUP, GroupJob, train_group
from core.spec import PROTOCOL_VARIANTS

TARGET_S = {"tf32": 5.0, "fp32": 7.0}  # the grouped study's wall time, default / fp32
NUMBERS_REL = 1e-3  # grouped vs engine, fp32 on the GPU: final val loss, relative
CPU_ABS = 5e-3  # GPU fp32 vs CPU fp32, seed 0: final val loss, absolute (2-3 decimals)
PROFILE_STEPS = 10  # steady-state steps under torch.profiler
PROBE_STEPS = 10  # a short timed run after the warm-up, to size the study before running it


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    @property
    def left(self) -> float:
        return self.end - time.perf_counter()


def base_spec(args, precision: str, **changes):
    """The study's base run: full evaluation at the end only (eval_interval 0)."""
    changes = {"iters": args.iters, "eval_interval": 0, **changes}
    return common.base_spec(args.size, args.device, precision, **changes)


def timed(way: str, specs, corpus, budget: Budget, skipped: list, label: str) -> dict | None:
    """``measure_way``, with a failure noted in ``skipped`` instead of ending the check."""
    try:
        return measure_way(way, specs, corpus, budget, skipped, label)
    except (Exception, SystemExit) as err:
        skipped.append(f"{label}: FAILED {type(err).__name__}: {err}".splitlines()[0])
        print(f"  {skipped[-1]}", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


def measure_way(way, specs, corpus, budget: Budget, skipped: list, label: str) -> dict | None:
    """Warm up ``way``, time a 10-step probe, and run the study if the budget holds it."""
    if budget.left < 10:
        skipped.append(f"{label}: no budget left")
        return None
    warm_up(way, specs, corpus)
    probe_specs = [s.replace(iters=PROBE_STEPS) for s in specs]
    runs = len(specs)
    if way == "engine":  # run by run: one run's probe, times the runs
        probe_specs, runs = probe_specs[:1], 1
    probe = run_way(way, probe_specs, corpus)
    scale = len(specs) / runs
    estimate = scale * (probe["train_s"] * specs[0].iters / PROBE_STEPS + probe["eval_s"])
    if estimate > budget.left:
        skipped.append(f"{label}: needs ~{estimate:.0f} s, {budget.left:.0f} s left")
        return None
    m = run_way(way, specs, corpus)
    m["warnings"] = sorted({*m["warnings"], *probe["warnings"]})
    m["estimate_s"] = estimate
    m["ms_per_study_step"] = m["train_s"] / specs[0].iters * 1e3
    print(f"  {label}: {m['study_s']:.2f} s ({m['ms_per_study_step']:.2f} ms/step)", flush=True)
    return m


def plan(args, default: str) -> tuple[list, list]:
    """(precision, way, runs) in the order they are worth the GPU's time: everything in fp32
    (the numbers need the engine there), grouped at the default precision (the target), the
    larger groups, grouped in the other precisions; then (after a profile, if one is due) the
    engine in the other precisions."""
    precisions, ways = args.precisions.split(","), args.ways.split(",")
    grouped = [w for w in ways if w != "engine"]
    first = [("fp32", w, args.runs) for w in ways if "fp32" in precisions]
    first += [(default, w, args.runs) for w in grouped if default in precisions]
    first += [(default, "grouped", int(n)) for n in args.scale.split(",") if n]
    first += [(p, w, args.runs) for p in precisions for w in grouped]
    late = [(p, "engine", args.runs) for p in precisions if "engine" in ways]
    first = list(dict.fromkeys(first))
    return first, [t for t in dict.fromkeys(late) if t not in first]


def measure(args) -> None:
    out = Path(args.out)
    budget = Budget(args.budget)
    corpus = common.load(args.corpus)
    data = load_json(out / "gpu_check.json")
    default = common.resolve_precision("auto", args.device)
    data.update(machine=common.machine(args.device), args=vars(args), speed={}, scale={},
                default_precision=default)  # fmt: skip
    skipped: list[str] = data.setdefault("skipped", [])

    def run_tasks(tasks):
        for precision, way, runs in tasks:
            specs = study_specs(base_spec(args, precision), runs)
            m = timed(way, specs, corpus, budget, skipped, f"{precision} {way} x{runs}")
            if m is not None and runs == args.runs:
                data["speed"].setdefault(precision, {})[way] = m
            elif m is not None:
                data["scale"][str(runs)] = m
            write_json(out / "gpu_check.json", data)

    first, late = plan(args, default)
    run_tasks(first)
    slow = [
        (p, "grouped")
        for p, limit in TARGET_S.items()
        if data["speed"].get(p, {}).get("grouped", {}).get("study_s", 0) > limit
    ]
    if args.profile == "always":
        slow = slow or [(default, "grouped")]
    if args.profile != "never" and slow and budget.left > 20:
        try:
            data["profile"] = profile(args, corpus, slow, out)
        except Exception as err:
            skipped.append(f"profile: FAILED {type(err).__name__}: {err}".splitlines()[0])
    elif slow and args.profile != "never":
        skipped.append("profile: no budget left")
    write_json(out / "gpu_check.json", data)
    run_tasks(late)


def profile(args, corpus, slow: list[tuple[str, str]], out: Path) -> dict:
    """A few steps of each slow (precision, way) under torch.profiler: what dominates."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    summary, text = {}, []
    for precision, way in slow:
        iters = GRAPH_WARMUP + 2 + PROFILE_STEPS
        specs = study_specs(base_spec(args, precision, iters=iters), args.runs)
        group, step = steady_group(way, specs, corpus)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        sync()
        t = time.perf_counter()
        with torch_profile(activities=activities) as prof:
            for s in range(step, step + PROFILE_STEPS):
                group.launch(s)
            group.flush()
            sync()
        ms = (time.perf_counter() - t) / PROFILE_STEPS * 1e3
        averages = prof.key_averages()
        sort = "self_device_time_total" if cuda else "self_cpu_time_total"
        tables = [averages.table(sort_by=sort, row_limit=15)]
        if cuda:
            tables.append(averages.table(sort_by="self_cpu_time_total", row_limit=15))
        text.append(
            f"== {precision} {way}: {PROFILE_STEPS} steady steps of {len(specs)} runs (after "
            f"warm-up and capture, no evaluation), {ms:.2f} ms/step under the profiler =="
        )
        text.extend(tables)
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        top = sorted(averages, key=lambda e: getattr(e, key, 0) or 0, reverse=True)[:5]
        total = sum(getattr(e, key, 0) or 0 for e in averages) or 1
        summary[f"{precision} {way} ms/step"] = ms
        summary[f"{precision} {way}"] = [
            {"op": e.key, "share": (getattr(e, key, 0) or 0) / total, "calls": e.count} for e in top
        ]
    (out / "profile.txt").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    return summary


def steady_group(way: str, specs, corpus):
    """A group of ``specs`` past its warm-up (and CUDA graph capture): (group, next step).

    What a study's steady state runs, without building, evaluation or checkpoints: the profile
    then shows the step itself.
    """
    from core.grouped import _Group, _Member
    from core.ledger import RunLedger

    with cuda_graphs(way != "grouped-eager"):
        members = []
        for spec in specs:
            name = run_name(spec)
            member = _Member(GroupJob(name, spec), corpus, RunLedger(name, spec, lambda e: None))
            member.prepare()
            members.append(member)
        group = _Group(members, corpus)
        group.build()
    steps = GRAPH_WARMUP + 2
    for s in range(1, steps + 1):
        group.launch(s)
    group.flush()
    return group, steps + 1


def cpu_reference(args) -> None:
    """Seed 0 of each protocol variant, fp32, on the CPU with the engine: final val loss."""
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = common.load(args.corpus)
    base = common.base_spec(args.size, "cpu", "fp32", iters=args.iters, eval_interval=0)
    t = time.perf_counter()
    losses = {}
    for variant in PROTOCOL_VARIANTS:
        spec = base.replace(variant=variant, seed=0)
        losses[run_name(spec)] = train(spec, corpus, run_id=run_name(spec)).val_loss
    payload = {
        "val_loss": losses,
        "seconds": time.perf_counter() - t,
        "threads": torch.get_num_threads(),
    }
    write_json(Path(args.out) / "cpu_ref.json", payload)
    print(f"cpu reference: {losses} in {payload['seconds']:.0f} s", flush=True)


def check_grouped(args) -> None:
    """A quick GPU smoke check before anything long: grouped fp32 = engine on 3 tiny runs."""
    corpus = common.load(args.corpus)
    base = common.base_spec("tiny", args.device, "fp32", iters=30, eval_interval=0)
    specs = study_specs(base, 3)
    engine = {run_name(s): train(s, corpus, run_id=run_name(s)).val_loss for s in specs}
    grouped = train_group([GroupJob(run_name(s), s) for s in specs], corpus)
    worst = max(abs(r.val_loss - engine[r.run_id]) / engine[r.run_id] for r in grouped)
    verdict = "ok" if worst <= NUMBERS_REL else "MISS"
    print(f"smoke: grouped vs engine, 3 tiny runs x 30 steps, fp32: {worst:.1e} {verdict}")


def worst_rel(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) / abs(b[k]) for k in b)


def report(args) -> None:
    out = Path(args.out)
    data = load_json(out / "gpu_check.json")
    cpu = load_json(out / "cpu_ref.json")
    speed, scale = data.get("speed", {}), data.get("scale", {})
    rows = [["section", "item", "value", "target", "ok"]]
    csv_rows = []

    def add(section, item, value, target="", ok=None):
        verdict = "" if ok is None else ("ok" if ok else "MISS")
        rows.append([section, item, value, target, verdict])
        csv_rows.append({"section": section, "item": item, "value": value, "target": target,
                         "ok": verdict})  # fmt: skip

    for pair in (args.tests or "").split(","):
        if pair:
            name, rc = pair.split("=")
            meaning = {"0": "passed", "5": "no tests", "124": "timed out"}.get(rc, "FAILED")
            add("tests", f"pytest {name}", f"exit {rc} ({meaning})", "exit 0", rc == "0")
    fp32 = speed.get("fp32", {})
    if "engine" in fp32:
        for way in ("grouped", "grouped-eager"):
            if way in fp32:
                rel = worst_rel(fp32[way]["val_loss"], fp32["engine"]["val_loss"])
                n = len(fp32["engine"]["val_loss"])
                add("numbers", f"{way} vs engine, fp32, {n} runs: max rel. diff of val loss",
                    f"{rel:.1e}", f"<= {NUMBERS_REL:.0e}", rel <= NUMBERS_REL)  # fmt: skip
    device = data.get("machine", {}).get("device", args.device)
    if not cpu:
        add("skipped", "CPU reference (seed 0): not finished within the budget", "")
    if cpu and fp32:
        for way in ("engine", "grouped"):
            if way in fp32:
                gpu = fp32[way]["val_loss"]
                diff = max(abs(gpu[k] - v) for k, v in cpu["val_loss"].items())
                digits = -math.log10(diff) if diff > 0 else 16
                add("numbers", f"{device} {way} vs CPU engine, fp32, seed 0: max |diff| val loss",
                    f"{diff:.1e} ({digits:.1f} decimals)", f"<= {CPU_ABS:.0e}",
                    diff <= CPU_ABS)  # fmt: skip
    for precision, ways in speed.items():
        for way, m in ways.items():
            limit = TARGET_S.get(precision) if way == "grouped" else None
            value = f"{m['study_s']:.2f} s, {m['ms_per_study_step']:.2f} ms/step"
            target = f"<= {limit:.0f} s" if limit else ""
            add("speed", f"{precision} {way}", value, target,
                m["study_s"] <= limit if limit else None)  # fmt: skip
            for warning in m.get("warnings", []):
                add("speed", f"{precision} {way}: {warning}"[:100], "", "no warning", False)
    default = data.get("default_precision", "tf32")
    sizes = []
    if "grouped" in speed.get(default, {}):
        sizes.append((args.runs, speed[default]["grouped"]["study_s"]))
    sizes += sorted((int(n), m["study_s"]) for n, m in scale.items())
    for n, s in sizes:
        add("scale", f"grouped x{n} ({default})", f"{s:.2f} s, {s / n * 1e3:.0f} ms/run")
    best = None
    for (n0, s0), (n1, s1) in itertools.pairwise(sizes):
        if s1 / n1 < 0.95 * s0 / n0:
            best = n1
        else:
            break
    if len(sizes) > 1:
        add("scale", "largest group whose time per run still fell 5%", str(best or sizes[0][0]))
    for label, top in data.get("profile", {}).items():
        for e in top[:3]:
            add("profile", f"{label}: {e['op'][:48]}", f"{e['share']:.0%} ({e['calls']} calls)")
    for note in data.get("skipped", []):
        add("skipped", note, "")
    machine = data.get("machine", {})
    print(
        f"gpu_check on {machine.get('device_name', '?')} (torch {machine.get('torch', '?')}, "
        f"CUDA {machine.get('cuda')}), {args.runs} runs x {args.iters} steps, {args.size} model"
    )
    print(common.table(rows, left=2))
    with (out / "gpu_check.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(csv_rows[0]) if csv_rows else ["section"])
        writer.writeheader()
        writer.writerows(csv_rows)
    data["cpu_reference"] = cpu
    data["table"] = csv_rows
    write_json(out / "gpu_check.json", data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("smoke", "measure", "cpu-reference", "report"))
    ap.add_argument("--out", required=True, help="folder for gpu_check.json/csv, profile.txt")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", choices=sorted(common.SIZES), default="default")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--runs", type=int, default=15, help="a multiple of 3")
    ap.add_argument("--precisions", default="fp32,tf32,bf16")
    ap.add_argument("--ways", default="engine,grouped,grouped-eager")
    ap.add_argument("--scale", default="45,75", help="larger studies for grouped (runs)")
    ap.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    ap.add_argument("--budget", type=float, default=240.0, help="seconds for measure")
    ap.add_argument("--threads", type=int, help="torch CPU threads (cpu-reference)")
    ap.add_argument("--tests", help="pytest exit codes for the report: name=rc,...")
    ap.add_argument("--corpus", help="path to input.txt (default: $LABTUI_DATA, ../shared)")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    {"smoke": check_grouped, "measure": measure, "cpu-reference": cpu_reference,
     "report": report}[args.stage](args)  # fmt: skip


if __name__ == "__main__":
    main()
