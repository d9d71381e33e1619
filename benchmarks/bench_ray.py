"""Wall time of a study on the local executor against Ray on this machine.

    python benchmarks/bench_ray.py --runs 4 --iters 40            # the default 1.6M model
    python benchmarks/bench_ray.py --runs 4 --iters 40 --device cuda

Each executor runs the same specs into its own session folder (in a temp dir); Ray is a local
instance with every CPU (and GPU) of the machine, started before the clock runs (its start-up
is reported apart). Prints one JSON line per measurement and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from core.events import RunStarted
from core.spec import RunSpec, Study
from data import load_corpus
from sessions.ray_executor import RayExecutor
from sessions.runner import StudyRunner
from sessions.store import Session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="runs (variants x seeds, cycled)")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpus-per-run", type=float, default=None)
    parser.add_argument("--data", default=None, help="corpus text (else the usual resolution)")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--ray-first", action="store_true", help="measure Ray before local")
    parser.add_argument("--local-threads", type=int, default=None, help="torch threads, local")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()

    corpus = load_corpus(args.data)
    variants = ("none", "layernorm", "rmsnorm")
    specs = [
        RunSpec(variant=variants[i % 3], seed=i // 3, iters=args.iters, device=args.device)
        for i in range(args.runs)
    ]
    root = tempfile.mkdtemp(prefix="bench-ray-")
    rows = {}

    executor = RayExecutor(gpus_per_run=args.gpus_per_run)
    if not args.skip_ray:
        t0 = time.perf_counter()
        executor.connect()
        ray_start = time.perf_counter() - t0
        print(json.dumps({"ray_start_s": round(ray_start, 2), "cluster": executor.describe()}))

    order = ("ray", "local") if args.ray_first else ("local", "ray")
    if args.local_threads:
        import torch

        torch.set_num_threads(args.local_threads)
    for name in order:
        if (name == "local" and args.skip_local) or (name == "ray" and args.skip_ray):
            continue
        started: list[float] = []
        with Session.create(root, Study(base=specs[0], grid={}), name=name) as session:
            session.add_runs(specs[1:])  # the study's one run, then the others
            runner = StudyRunner(session, corpus)
            if name == "ray":
                runner.executor = executor
            t = time.perf_counter()

            def on_event(event, t=t, started=started):
                if isinstance(event, RunStarted):
                    started.append(time.perf_counter() - t)

            runner.on_event = on_event
            runner.run()
            wall = time.perf_counter() - t
            results = session.results()
        rows[name] = {
            "executor": name,
            "local_threads": args.local_threads if name == "local" else None,
            "runs": len(specs),
            "iters": args.iters,
            "wall_s": round(wall, 2),
            "first_run_started_s": round(min(started), 2),
            "mean_run_wall_s": round(float(results["wall_s"].mean()), 2),
            "statuses": results["status"].value_counts().to_dict(),
            "val_loss": [round(v, 6) for v in results["val_loss"]],
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(rows[name]))
    if len(rows) == 2:
        speedup = rows["local"]["wall_s"] / rows["ray"]["wall_s"]
        print(json.dumps({"ray_speedup": round(speedup, 2)}))
    if not args.skip_ray:
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
