"""Driver memory of the shard plan at its steps, on a build benchmarks/scale.py fabricated (issue 11).

    .venv/bin/python benchmarks/shard_plan_memory.py --build /tmp/me/scale/scale-0.05

In one driver process on an in-process Ray (as the `shard` stage's driver, without writing tars): the plan
(`shard_plan.build`), its partitions checked without writing the manifest (the plan's own memory), then a fresh plan
with its partitions writing the videos table to a scratch file (adds the writer's row group, up to 8,192 rows).
Prints the driver's RSS, its peak (VmHWM) and Arrow's allocation after each step, and the wall time of the step;
run it at two fractions to get the growth per video."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _memory() -> tuple[float, ...]:
    """RSS, its peak, and the RSS's private (anonymous) and shared-memory parts (the Ray object store's pages the
    driver touched when it fetched results), MiB."""
    with open("/proc/self/status") as f:
        kib = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmRSS", "VmHWM", "Rss"))}
    return tuple(kib[k] / 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssShmem"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="a build folder scale.py fabricated (…/scale-<F>)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import pyarrow as pa
    from scale import build_config

    from pipeline.core import ray_runtime
    from pipeline.core.context import StageContext
    from pipeline.ingest import manifest_refresh, shard_plan

    build = os.path.abspath(args.build)
    cfg = build_config(build, os.path.dirname(build), args.workers, None)
    ray_runtime.init(cfg.ray.address, cfg.ray.num_cpus)
    ctx = StageContext(cfg)
    rows = []

    def step(name: str, t0: float) -> None:
        rows.append((name, time.monotonic() - t0, *_memory(), pa.total_allocated_bytes() / 2**20))

    step("Ray started", time.monotonic())
    t0 = time.monotonic()
    plan = shard_plan.build(ctx)
    step("plan built", t0)
    videos = len(plan.videos)  # accepted videos (an array here, an Arrow table before issue 11's last pass)
    t0 = time.monotonic()
    shard_plan.run_partitions(ctx, plan, "bench", shard_plan.check_partition, manifest_refresh.SHARDS_PER_TASK, None)
    step("partitions checked (no writer)", t0)
    del plan
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        plan = shard_plan.build(ctx)
        writer = shard_plan.VideosWriter(os.path.join(tmp, "videos.parquet"))
        shard_plan.run_partitions(ctx, plan, "bench", shard_plan.check_partition, manifest_refresh.SHARDS_PER_TASK,
                                  writer)
        writer.close()
        step("plan + partitions + videos writer", t0)
    print(f"\n### Shard plan driver memory: {build} ({videos} videos, {args.workers} workers)\n")
    print("| step | wall (s) | driver RSS (MiB) | driver peak (MiB) | private | object store pages | Arrow allocated |")
    print("|---|---|---|---|---|---|---|")
    for name, wall, rss, hwm, anon, shmem, arrow in rows:
        print(f"| {name} | {wall:.1f} | {rss:.0f} | {hwm:.0f} | {anon:.0f} | {shmem:.0f} | {arrow:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
