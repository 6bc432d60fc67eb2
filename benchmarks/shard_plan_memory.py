"""Driver memory of the shard plan at its steps, on a build benchmarks/scale.py fabricated (issue 11).

    .venv/bin/python benchmarks/shard_plan_memory.py --build /tmp/me/scale/scale-0.05

In one driver process on an in-process Ray (as the `shard` stage's driver, without writing tars): the plan
(`shard_plan.build`), its partitions checked without writing the manifest (the plan's own memory), then a fresh plan
with its partitions writing the videos table to a scratch file (adds the writer's row group, up to 8,192 rows).
Prints the driver's RSS, its peak (VmHWM) and Arrow's allocation after each step, and the wall time of the step;
run it at two fractions to get the growth per video.

    .venv/bin/python benchmarks/shard_plan_memory.py --build /tmp/me/scale/scale-0.05 --scenes

measures instead the `scenes` stage's scan of the parts still to do (`scenes.pending_units`), each path in a fresh
driver process: the keys path the stage uses, and as the baseline the whole-table path it replaced (every accepted
probe row read into the driver, deduplicated and sliced there). Prints per path the wall time, the driver's RSS and
peak above what it was with Ray started, and the ratio to the baseline."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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


def _whole_table_scan(ctx) -> list:
    """The scan before issue 11's ninth pass: the accepted probe rows as one Arrow table in the driver (read by Ray
    tasks), the first of each content hash in source_uri order, video_id order, and each pending part's rows a
    slice of that table."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.core import parts, ray_runtime
    from pipeline.ingest import manifest, plan_rows
    from schemas import layout, tables

    crawl = plan_rows.sorted_crawl(ctx, ["source_uri"])["source_uri"]
    spans = parts.part_spans(crawl, ctx.cfg.probe.part_size, manifest.probe_settings(ctx))
    committed = manifest.committed_parts(ctx, layout.PROBE_PARTS_DIR)
    uris = [committed[name][0] for name, _, _ in spans if name in committed]
    groups = [uris[g:g + 256] for g in range(0, len(uris), 256)]
    columns = plan_rows.PROBE_COLUMNS
    read = ray_runtime.map_units("bench", _read_group, groups, (columns,), "probe parts")
    rows = pa.concat_tables([plan_rows.empty(tables.PROBE_PART, columns)] + read)
    ok = rows.filter(pc.fill_null(rows["ok"], False)).sort_by("source_uri")
    _, first = np.unique(np.asarray(ok["sha256"].to_numpy(zero_copy_only=False)), return_index=True)
    accepted = ok.take(pa.array(np.sort(first))).sort_by("video_id")
    scene_committed = manifest.committed_parts(ctx, layout.SCENES_PARTS_DIR)
    return [(name, manifest.ArrowRows(accepted.slice(a, b - a)))
            for name, a, b in parts.part_spans(accepted["video_id"], ctx.cfg.scenes.part_size,
                                               manifest.scenes_settings(ctx)) if name not in scene_committed]


def _read_group(uris: list[str], columns: list[str]):
    from pipeline.ingest import plan_rows
    from schemas import tables

    return plan_rows.read_group(uris, columns, tables.PROBE_PART)


SCANS = {"keys (scenes.pending_units)": "keys", "whole table (baseline)": "table"}


def _scan_child(build: str, workers: int, path: str) -> dict:
    import pyarrow as pa
    from scale import build_config

    from pipeline.core import ray_runtime
    from pipeline.core.context import StageContext
    from pipeline.stages import scenes

    cfg = build_config(build, os.path.dirname(build), workers, None)
    ray_runtime.init(cfg.ray.address, cfg.ray.num_cpus)
    ctx = StageContext(cfg)
    rss0, hwm0, *_ = _memory()
    t0 = time.monotonic()
    units = scenes.pending_units(ctx) if path == "keys" else _whole_table_scan(ctx)
    wall = time.monotonic() - t0
    rss, hwm, anon, shmem = _memory()
    return {"wall_s": wall, "rss_mib": rss, "rss_growth_mib": rss - rss0, "peak_mib": hwm,
            "peak_growth_mib": hwm - max(hwm0, rss0), "anon_mib": anon, "arrow_mib": pa.total_allocated_bytes() / 2**20,
            "pending_parts": len(units), "pending_videos": sum(len(rows) for _, rows in units)}


def scenes_scan(build: str, workers: int) -> int:
    import pyarrow.parquet as pq

    from schemas import layout

    videos = pq.ParquetFile(os.path.join(build, layout.MANIFEST_VIDEOS)).metadata.num_rows
    results = {}
    for label, path in SCANS.items():
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--build", build, "--workers", str(workers),
                               "--scan-child", path], check=True, capture_output=True, text=True)
        results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = results["whole table (baseline)"]
    print(f"\n### scenes scan, driver memory: {build} ({videos} videos, {workers} workers)\n")
    print("| path | wall (s) | RSS growth (MiB) | peak growth (MiB) | peak (MiB) | Arrow allocated (MiB) | "
          "pending parts | peak growth / baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['wall_s']:.1f} | {r['rss_growth_mib']:.1f} | {r['peak_growth_mib']:.1f} | "
              f"{r['peak_mib']:.0f} | {r['arrow_mib']:.1f} | {r['pending_parts']} | "
              f"{r['peak_growth_mib'] / max(base['peak_growth_mib'], 0.1):.2f} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="a build folder scale.py fabricated (…/scale-<F>)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scenes", action="store_true", help="measure the scenes stage's scan instead")
    ap.add_argument("--scan-child", choices=sorted(SCANS.values()), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scan_child:
        print(json.dumps(_scan_child(os.path.abspath(args.build), args.workers, args.scan_child)))
        return 0
    if args.scenes:
        return scenes_scan(os.path.abspath(args.build), args.workers)

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
