"""Peak RSS and CPU of one `mix` final-merge task that reads N sorted parts at once (issue 11: `mix.merge_fan_in`).

    .venv/bin/python benchmarks/mix_merge_fan_in.py --jsonl OUT/mixtures/stage4/caption.jsonl \\
        --members OUT/mixtures/stage4/members.parquet --parts 64,128,256,391

Fabricates N record parts of one (stage, task) — lines taken in turn from a committed mixture JSONL, random order
keys, --rows rows each, written in the partitions' row groups (schemas.mixture.PART_ROWS_PER_GROUP) — and N members
parts made from a committed members.parquet (record ids suffixed so every part is distinct), then merges all N at
once in a fresh process per N, as a final-merge Ray task does (pipeline.mix.assemble.write_task / write_members),
and prints that process's peak RSS (VmHWM), its RSS before the merge, CPU seconds and rows written. A full-size build
has ~391 partitions; its largest task (caption) has ~9,000 rows per partition, so every part holds more than the
one row group a merge keeps decoded per part.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

STAGE, TASK = "stage4", "caption"


def _config(out: str):
    from schemas import config as config_schema

    return config_schema.build({"sources": [out], "out": out}, [])


def fabricate(out: str, parts: int, rows: int, jsonl: str, members: str, seed: int = 0) -> None:
    from pipeline.mix import merge as mix_merge
    from schemas import layout, mixture

    with open(jsonl, encoding="utf-8") as f:
        lines = f.read().splitlines()
    source = pq.read_table(members)
    rng = np.random.default_rng(seed)
    taken = 0
    for p in range(parts):
        keys = pa.array([f"{k:016x}" for k in rng.integers(0, 2**63, rows)], pa.string())
        picked = [lines[(taken + i) % len(lines)] for i in range(rows)]
        taken += rows
        part = pa.table({mixture.ORDER_COLUMN: keys, "record_id": [f"r{p}-{i}" for i in range(rows)],
                         "video_id": ["v"] * rows, "shard": [f"shard-{p:06d}.tar"] * rows, "line": picked,
                         "internvideo_line": pa.nulls(rows, pa.string()),
                         "frame_dir": pa.nulls(rows, pa.string()),
                         "frame_indices": pa.nulls(rows, pa.list_(pa.int32()))}, schema=mixture.MIX_RECORDS_PART)
        part = part.take(pc.sort_indices(keys))
        path = os.path.join(out, layout.mix_records_part_path(STAGE, TASK, p))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(part, path, row_group_size=mixture.PART_ROWS_PER_GROUP, compression="zstd")

        start = (p * rows) % max(1, source.num_rows - rows)
        m = source.slice(start, rows)
        m = m.set_column(m.schema.get_field_index("record_id"), "record_id",
                         pc.binary_join_element_wise(m["record_id"], pa.scalar(f"-{p:06d}"), ""))
        m = m.add_column(0, mixture.MIX_MEMBERS_PART.field(mixture.ORDER_COLUMN), keys[:m.num_rows])
        m = m.cast(mixture.MIX_MEMBERS_PART)
        m = m.take(pc.sort_indices(mix_merge.members_key(m)))
        path = os.path.join(out, layout.mix_members_part_path(STAGE, p))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(m, path, row_group_size=mixture.PART_ROWS_PER_GROUP, compression="zstd")


def _vm(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(out: str, parts: int, kind: str) -> dict:
    from pipeline.core.context import StageContext
    from pipeline.mix import assemble
    from schemas import layout

    ctx = StageContext(_config(out))
    before = _vm("VmRSS")
    cpu, wall = time.process_time(), time.monotonic()
    folder = os.path.join(out, "merged")
    if kind == "records":
        rows = assemble.write_task(ctx, STAGE, TASK,
                                   [layout.mix_records_part_path(STAGE, TASK, p) for p in range(parts)], folder).count
    else:
        rows = sum(assemble.write_members(ctx, [layout.mix_members_part_path(STAGE, p) for p in range(parts)], {},
                                          os.path.join(folder, "members.parquet")).values())
    return {"kind": kind, "parts": parts, "rows": rows, "rss_before_mib": before, "peak_rss_mib": _vm("VmHWM"),
            "cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jsonl", required=True, help="a committed mixture JSONL whose lines the parts reuse")
    ap.add_argument("--members", required=True, help="a committed members.parquet whose rows the parts reuse")
    ap.add_argument("--parts", default="64,128,256,391", help="fan-ins to measure (comma-separated)")
    ap.add_argument("--rows", type=int, default=3072, help="rows per part (3 row groups of 1,024)")
    ap.add_argument("--work", default="/tmp/mix-merge-fan-in")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2])))
        return 0
    fan_ins = [int(n) for n in args.parts.split(",")]
    started = time.monotonic()
    fabricate(args.work, max(fan_ins), args.rows, args.jsonl, args.members)
    print(f"fabricated {max(fan_ins)} record and members parts of {args.rows} rows in "
          f"{time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")
    print("| merge | parts read at once | rows | RSS before (MiB) | peak RSS (MiB) | CPU (s) | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("records", "members"):
        for n in fan_ins:
            done = subprocess.run([sys.executable, __file__, "--jsonl", args.jsonl, "--members", args.members,
                                   "--child", args.work, str(n), kind], check=True, capture_output=True, text=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {kind} | {n} | {r['rows']:,} | {r['rss_before_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
                  f"{r['cpu_s']:.1f} | {r['wall_s']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
