"""Throughput of the per-row work with 1 and 2 Ray workers (issue 11: 2 workers >= 1.7x the throughput of 1).

    .venv/bin/python benchmarks/worker_scaling.py                      # F = 0.05 build under bench-out/
    .venv/bin/python benchmarks/worker_scaling.py --build /work/x/scale-0.05 --partitions 8 --rounds 3

The per-row work measured is the `mix` stage's partition task (`pipeline.mix.partition.build_records`: reading a
partition's annotations, forming, serialising and validating its records), the largest per-row phase of a build.
Each measurement is a child process starting an in-process Ray with N CPUs, warming N workers with one task each,
then timing the first --partitions partitions of a fabricated build (made with `benchmarks/scale.py --stages
shard,annotate` when --build has no manifest yet) as Ray tasks. Storage writes are dropped (nothing in the build
changes) so the figure is the tasks' CPU work, not the disk. The worker counts take turns for --rounds rounds, so a
change in the machine's load reaches each; the table gives the median wall time and the throughput ratio to the
first worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))


def _timed_build(part, ctx) -> float:
    from pipeline.io import storage
    from pipeline.mix import partition

    storage.write_bytes = lambda *_, **__: None
    started = time.perf_counter()
    result = partition.build_records(part, ctx)
    if result["problems"]:
        raise RuntimeError(f"partition {part.index}: {result['problems'][:3]}")
    return time.perf_counter() - started


def run_child(build: str, workers: int, partitions: int) -> dict:
    sys.path.insert(0, HERE)
    import ray
    import scale

    from pipeline.core.context import StageContext
    from pipeline.mix import assemble

    ctx = StageContext(scale.build_config(build, os.path.dirname(build), workers, None))
    parts = []
    for part in assemble.iter_partitions(ctx):
        if len(parts) == partitions:
            break
        parts.append(part)
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_timed_build)
        ctx_ref = ray.put(ctx)
        part_refs = [ray.put(p) for p in parts]
        ray.get([task.remote(p, ctx_ref) for p in part_refs[:workers]])  # every worker started and warm
        started = time.perf_counter()
        task_s = ray.get([task.remote(p, ctx_ref) for p in part_refs])
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    return {"wall_s": wall, "task_s": sum(task_s), "videos": sum(len(p.videos) for p in parts)}


def _measure(args, workers: int) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(workers), "--result", result.name,
                        "--build", args.build, "--partitions", str(args.partitions)], check=True)
        return json.load(open(result.name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=None, help="a build fabricated by scale.py (default: --work/scale-<F>)")
    ap.add_argument("--fraction", type=float, default=0.05, help="fraction to fabricate when --build has none")
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-out"))
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, the first is the baseline")
    ap.add_argument("--partitions", type=int, default=8, help="partitions (from the first) built per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per worker count, the counts taking turns")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.build = os.path.abspath(args.build or os.path.join(args.work, f"scale-{args.fraction:g}"))
    if args.child:
        with open(args.result, "w") as f:
            json.dump(run_child(args.build, args.child, args.partitions), f)
        return 0

    sys.path.insert(0, HERE)
    from bench_common import ensure_scale_build, load_average, markdown

    ensure_scale_build(args.build, args.fraction)
    counts = [int(w) for w in args.workers.split(",")]
    load = load_average()
    runs: dict[int, list[dict]] = {w: [] for w in counts}
    for _ in range(args.rounds):
        for w in counts:
            runs[w].append(_measure(args, w))
    base = statistics.median(r["wall_s"] for r in runs[counts[0]])
    rows = []
    for w in counts:
        wall = statistics.median(r["wall_s"] for r in runs[w])
        task = statistics.median(r["task_s"] for r in runs[w])
        videos = runs[w][0]["videos"]
        rows.append([str(w), f"{wall:.1f}", f"{task:.1f}", f"{videos / wall:.0f}", f"{base / wall:.2f}"])
    print(f"mix partition tasks: {args.partitions} partitions of {args.build} ({runs[counts[0]][0]['videos']} "
          f"videos), median of {args.rounds} rounds, warm workers; load average {load:.1f} at start")
    print(markdown(["workers", "wall (s)", "task time summed (s)", "videos/s", "throughput ratio"], rows))
    print("every run, wall (s): " + "; ".join(f"{w} workers " + ", ".join(f"{r['wall_s']:.1f}" for r in runs[w])
                                             for w in counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
