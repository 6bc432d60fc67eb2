"""CPU of the `mix` stage's partition tasks (`pipeline.mix.partition.build_records`), baseline against this tree
(issue 11).

    .venv/bin/python benchmarks/mix_partition.py                        # F = 0.01 build under bench-out/
    .venv/bin/python benchmarks/mix_partition.py --build /tmp/x/scale-0.01 --partitions 3 --repeat 3
    .venv/bin/python benchmarks/mix_partition.py --set mix.timestamp_prompt=inline --set mix.json_list=true

Runs `build_records` in-process on the first --partitions partitions of a fabricated build (made with
`benchmarks/scale.py --stages shard,annotate` when --build has no manifest yet), once with the code of --baseline
(a git commit, extracted with `git archive` into a temporary folder) and once with this tree, each in a child
process that has that tree first on its path. Storage writes are replaced by a sha256 of every part the task would
write (not counted in the CPU time), so both trees' parts are compared byte for byte and nothing in the build
changes. Prints per tree the process CPU time of the tasks (the least of --rounds x --repeat runs, the trees
taking turns), µs per record and the ratio to the baseline; exits 1 when a part differs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
BASELINE = "105de36"  # main before the partition tasks' CPU work of issue 11


def run_child(tree: str, build: str, partitions: int, repeat: int, overrides: list[str]) -> dict:
    sys.path.insert(0, tree)
    sys.path.insert(0, os.path.join(tree, "benchmarks"))  # the tree's own scale.py, which puts its tree first
    import pyarrow.parquet as pq
    import scale

    from pipeline.core.context import StageContext
    from pipeline.io import storage
    from pipeline.mix import assemble, partition

    scale.OVERRIDES = [*scale.OVERRIDES, *overrides]
    cfg = scale.build_config(build, os.path.dirname(build), 1, None)
    ctx = StageContext(cfg)
    parts = []
    for part in assemble.iter_partitions(ctx):
        if len(parts) == partitions:
            break
        parts.append(part)
    written: dict[str, str] = {}
    records = 0

    capture_s = 0.0

    def capture(uri: str, data: bytes, *_, **__) -> None:
        nonlocal records, capture_s
        t0 = time.process_time()
        rel = os.path.relpath(uri, build)
        written[rel] = hashlib.sha256(data).hexdigest()
        if "/records/" in rel:
            records += pq.read_metadata(io.BytesIO(data)).num_rows
        capture_s += time.process_time() - t0

    storage.write_bytes = capture
    cpu = []
    for _ in range(repeat):
        written.clear()
        records = 0
        total = 0.0
        for part in parts:
            capture_s = 0.0
            t0 = time.process_time()
            result = partition.build_records(part, ctx)
            total += time.process_time() - t0 - capture_s
            if result["problems"]:
                raise SystemExit(f"partition {part.index}: {result['problems'][:3]}")
        cpu.append(total)
    return {"cpu_s": cpu, "records": records, "code": os.path.dirname(os.path.dirname(partition.__file__)),
            "videos": sum(len(p.videos) for p in parts),
            "parts": dict(sorted(written.items()))}


def _extract(ref: str, folder: str) -> str:
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", ref], check=True, capture_output=True,
                            text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return commit


def _measure(tree: str, args) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", tree, "--result", result.name,
               "--build", args.build, "--partitions", str(args.partitions), "--repeat", str(args.repeat)]
        for o in args.set:
            cmd += ["--set", o]
        env = dict(os.environ, PYTHONPATH=tree)
        subprocess.run(cmd, check=True, env=env)
        return json.load(open(result.name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=None, help="a build fabricated by scale.py (default: --work/scale-<F>)")
    ap.add_argument("--fraction", type=float, default=0.01, help="fraction to fabricate when --build has none")
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-out"))
    ap.add_argument("--baseline", default=BASELINE, help="git commit whose build_records is the baseline")
    ap.add_argument("--partitions", type=int, default=2, help="how many partitions (from the first) to build")
    ap.add_argument("--repeat", type=int, default=2, help="runs per child process; the least CPU time counts")
    ap.add_argument("--rounds", type=int, default=2, help="child processes per tree, the trees taking turns")
    ap.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.build = os.path.abspath(args.build or os.path.join(args.work, f"scale-{args.fraction:g}"))
    if args.child:
        out = run_child(args.child, args.build, args.partitions, args.repeat, args.set)
        with open(args.result, "w") as f:
            json.dump(out, f)
        return 0

    sys.path.insert(0, HERE)
    from bench_common import ensure_scale_build, load_average, markdown

    ensure_scale_build(args.build, args.fraction)
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="mix-partition-baseline-") as base_tree:
        commit = _extract(args.baseline, base_tree)
        # the trees take turns, so a change in the machine's load reaches both
        base, current = _measure(base_tree, args), _measure(ROOT, args)
        for _ in range(args.rounds - 1):
            base["cpu_s"] += _measure(base_tree, args)["cpu_s"]
            current["cpu_s"] += _measure(ROOT, args)["cpu_s"]
    for tree, r in ((base_tree, base), (ROOT, current)):
        if os.path.realpath(r["code"]) != os.path.realpath(os.path.join(tree, "pipeline")):
            raise SystemExit(f"measured {r['code']}, not {tree}'s code")
    same = base["parts"] == current["parts"]
    rows = []
    for name, r in ((f"baseline {commit}", base), ("this tree", current)):
        cpu = min(r["cpu_s"])
        rows.append([name, f"{cpu:.2f}", f"{1e6 * cpu / r['records']:.1f}", f"{cpu / min(base['cpu_s']):.2f}"])
    print(f"mix partition tasks: {args.partitions} partition(s) of {args.build}, {current['videos']} videos, "
          f"{current['records']} records, {len(current['parts'])} parts; least of {args.rounds} x {args.repeat} runs; "
          f"overrides {args.set or 'none'}; load average {load:.1f} at start")
    print(markdown(["code", "CPU (s)", "µs / record", "ratio"], rows))
    print("every run (s): baseline " + ", ".join(f"{c:.2f}" for c in base["cpu_s"]) + "; this tree "
          + ", ".join(f"{c:.2f}" for c in current["cpu_s"]))
    print(f"parts byte-identical to the baseline's: {'yes' if same else 'NO'}")
    if not same:
        diff = sorted(k for k in set(base["parts"]) | set(current["parts"])
                      if base["parts"].get(k) != current["parts"].get(k))
        print("differing parts:", *diff[:10], sep="\n  ")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
