"""What a stage's driver holds, at named points of the stage (issue 11: attribute the drivers' growth).

    .venv/bin/python benchmarks/driver_attribution.py --out /tmp/x/scale-0.05 --stage annotate --json a005.json
    .venv/bin/python benchmarks/driver_attribution.py --out /tmp/x/scale-0.05 --stage annotate --trace   # + tracemalloc
    .venv/bin/python benchmarks/driver_attribution.py --compare a005.json a025.json     # growth per video / per shard
    .venv/bin/python benchmarks/driver_attribution.py --out BUILD --stage stats   # on a build with every stage run

Runs one stage of a build fabricated by benchmarks/scale.py (its committed units all present, so the stage does its
driver-side work only) through `runner.run_build`, in this process, as scale.py's child does. The stage's own
functions are wrapped (nothing in the pipeline changes) so that at each named point — Ray started, each planning
step, the task results gathered, the summary — it records: VmRSS split into anonymous, file-backed and shared-memory
pages (/proc/self/status; Ray's object store is shared memory the driver maps when it reads an object), the peak RSS
since the previous point (sampled every 10 ms), Arrow's allocated bytes, the ObjectRefs the driver's core worker
counts and the bytes of its in-process memory store (results under Ray's inline threshold live there), the largest
gc-tracked object types, and with --trace tracemalloc's allocation sites grown since the previous point (file:line).
--compare reads two such runs and prints each point's growth per video and per shard between them.

The outputs of the stage are removed first when they are what scale.py would remove (shard: the manifest and
shard index; annotate: the QVHighlights export; stats: stats/), so the run does the stage's full driver work.
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import importlib
import json
import os
import sys
import threading
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import proc_status_kib  # noqa: E402

# The named points: (module, function) pairs whose entry and exit are recorded, per stage. Functions are patched
# on their module, so a caller that looks them up there (module.function) goes through the wrapper.
POINTS = {
    "shard": [("pipeline.ingest.shard_plan", "_read_probe"), ("pipeline.ingest.shard_plan", "_read_scenes"),
              ("pipeline.ingest.shard_plan", "_rejects_of"), ("pipeline.ingest.shard_plan", "run_partitions"),
              ("pipeline.ingest.shard_plan", "reconcile"), ("pipeline.ingest.shard_plan", "write_rejects"),
              ("pipeline.ingest.sharding", "wids_index")],
    "hico": [("pipeline.stages.hico", "_units"), ("compressors.token_store", "IndexWriter"),
             ("pipeline.ingest.sharded_videos", "shard_names")],
    "annotate": [("pipeline.stages.annotate", "_units"), ("pipeline.ingest.sharded_videos", "shard_names"),
                 ("pipeline.stages.annotate", "_write_qvhighlights")],
    "stats": [("pipeline.stats.tables", "shard_rows"), ("pipeline.stats.tables", "read_annotations"),
              ("pipeline.stats.tables", "read_hico"), ("pipeline.stats.tables", "collect_mixtures"),
              ("pipeline.stats.videos", "build_file"), ("pipeline.stats.tables", "write"),
              ("pipeline.stats.summary", "section")],
}
COMMON = [("pipeline.core.ray_runtime", "init"), ("pipeline.core.orphans", "remove_unplanned"),
          ("pipeline.core.summary", "summarize_persisted"), ("pipeline.core.summary", "write")]
RESET = {"shard": ("manifest/videos.parquet", "manifest/rejects.parquet", "shards/index.json", "manifest/plan"),
         "annotate": ("annotations/grounding_qvhighlights.jsonl",), "hico": (), "stats": ("stats",)}
TOP_TYPES = 8
TOP_SITES = 8


def _status_kib() -> dict:
    return proc_status_kib("self", ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"))


class Sampler(threading.Thread):
    """/proc/self/status every 10 ms; `take()` returns the figures at the highest VmRSS since the last call."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"VmRSS": 0}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            self._sample()

    def _sample(self) -> None:
        now = _status_kib()
        if now["VmRSS"] > self.peak["VmRSS"]:
            self.peak = now

    def take(self) -> dict:
        self._sample()
        peak, self.peak = self.peak, {"VmRSS": 0}
        return peak


class Recorder:
    def __init__(self, trace: bool):
        self.trace = trace
        self.points: list[dict] = []
        self.sampler = Sampler()
        self.sampler.start()
        self._snapshot = tracemalloc.take_snapshot() if trace else None
        self._depth = 0

    def point(self, name: str) -> None:
        import pyarrow as pa

        status = _status_kib()
        rec = {"point": name, "t": time.monotonic(), "rss_kib": status["VmRSS"], "anon_kib": status["RssAnon"],
               "file_kib": status["RssFile"], "shmem_kib": status["RssShmem"], "hwm_kib": status["VmHWM"],
               "arrow_bytes": pa.total_allocated_bytes()}
        peak = self.sampler.take()
        rec.update({"peak_since_last_kib": peak["VmRSS"], "peak_anon_kib": peak["RssAnon"],
                    "peak_shmem_kib": peak["RssShmem"]})
        rec.update(_ray_counts())
        counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
        rec["gc_objects"] = sum(counts.values())
        rec["gc_top"] = dict(counts.most_common(TOP_TYPES))
        if self.trace:
            snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            rec["traced_bytes"] = sum(s.size for s in snap.statistics("filename"))
            rec["sites"] = [{"site": f"{s.traceback[0].filename.split('site-packages/')[-1]}:{s.traceback[0].lineno}",
                             "size_diff": s.size_diff, "count_diff": s.count_diff}
                            for s in snap.compare_to(self._snapshot, "lineno")[:TOP_SITES]]
            self._snapshot = snap
        self.points.append(rec)

    def wrap(self, module: str, name: str) -> None:
        mod = importlib.import_module(module)
        fn = getattr(mod, name)
        recorder = self
        label = f"{module.rsplit('.', 1)[-1]}.{name}"
        if isinstance(fn, type):  # a context-manager class: record its construction and its exit
            class Wrapped(fn):
                def __init__(self, *a, **k):
                    recorder.point(f"> {label}")
                    super().__init__(*a, **k)

                def __exit__(self, *exc):
                    out = super().__exit__(*exc)
                    recorder.point(f"< {label}")
                    return out
            setattr(mod, name, Wrapped)
            return

        @functools.wraps(fn)
        def call(*a, **k):
            recorder.point(f"> {label}")
            try:
                return fn(*a, **k)
            finally:
                recorder.point(f"< {label}")

        if getattr(fn, "__code__", None) is not None and fn.__code__.co_flags & 0x20:  # a generator function
            @functools.wraps(fn)
            def gen(*a, **k):
                recorder.point(f"> {label}")
                try:
                    yield from fn(*a, **k)
                finally:
                    recorder.point(f"< {label}")
            setattr(mod, name, gen)
        else:
            setattr(mod, name, call)


def _ray_counts() -> dict:
    import ray

    if not ray.is_initialized():
        return {"object_refs": 0, "memory_store_objects": 0, "memory_store_bytes": 0}
    cw = ray._private.worker.global_worker.core_worker
    return {"object_refs": len(cw.get_all_reference_counts()), "memory_store_objects": cw.get_memory_store_size(),
            "memory_store_bytes": cw.get_local_memory_store_bytes_used()}


def _reset(out: str, stage: str) -> None:
    import shutil

    for rel in RESET[stage]:
        path = os.path.join(out, rel)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)


def run(args) -> dict:
    if args.trace:
        tracemalloc.start(1)
    recorder = Recorder(args.trace)
    recorder.point("start (imports done)")
    path = list(sys.path)
    from scale import build_config
    sys.path[:] = path  # scale.py puts its own checkout first: PYTHONPATH says which code runs (before/after runs)

    from pipeline.core import runner

    for module, name in POINTS[args.stage] + COMMON:
        recorder.wrap(module, name)
    cfg = build_config(args.out, os.path.dirname(args.out), args.workers, None, args.sets)
    _reset(args.out, args.stage)
    with open(os.path.join(args.out, "work/scale-counts.json")) as f:
        counts = json.load(f)
    t0 = time.monotonic()
    runner.run_build(cfg, [args.stage], quiet=True)
    wall = time.monotonic() - t0
    recorder.point("end")
    recorder.sampler.stop.set()
    start = recorder.points[0]["t"]
    for p in recorder.points:
        p["t"] = round(p["t"] - start, 3)
    return {"stage": args.stage, "out": args.out, "videos": counts["videos"], "shards": counts["shards"],
            "wall_s": wall, "trace": args.trace, "env": {k: v for k, v in os.environ.items() if k.startswith("RAY_")},
            "points": recorder.points}


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def print_run(doc: dict) -> None:
    print(f"{doc['stage']} on {doc['out']}: {doc['videos']} videos, {doc['shards']} shards, wall {doc['wall_s']:.1f} s"
          f"{' (tracemalloc on)' if doc['trace'] else ''}")
    print("| point | t (s) | RSS | anon | file | shmem | peak since last (anon / shmem) | arrow MiB | refs | "
          "mem store (n / KiB) | gc objects |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in doc["points"]:
        print(f"| {p['point']} | {p['t']:.1f} | {_mib(p['rss_kib'])} | {_mib(p['anon_kib'])} | {_mib(p['file_kib'])} | "
              f"{_mib(p['shmem_kib'])} | {_mib(p['peak_since_last_kib'])} ({_mib(p['peak_anon_kib'])} / "
              f"{_mib(p['peak_shmem_kib'])}) | {p['arrow_bytes'] / 2**20:.1f} | "
              f"{p['object_refs']} | {p['memory_store_objects']} / {p['memory_store_bytes'] / 1024:.0f} | "
              f"{p['gc_objects']} |")
    if doc["trace"]:
        print("\ntracemalloc: sites grown since the previous point (> 64 KiB)")
        for p in doc["points"]:
            grown = [s for s in p.get("sites", []) if abs(s["size_diff"]) > 65536]
            if grown:
                print(f"- {p['point']}: " + "; ".join(f"{s['site']} {s['size_diff'] / 1024:+.0f} KiB "
                                                       f"({s['count_diff']:+d})" for s in grown))


def compare(a: dict, b: dict) -> None:
    """Growth of each point's figures from run `a` to run `b` (same stage, a larger build), per video and shard."""
    dv, ds = b["videos"] - a["videos"], b["shards"] - a["shards"]
    print(f"{a['stage']}: {a['videos']} -> {b['videos']} videos, {a['shards']} -> {b['shards']} shards; "
          f"wall {a['wall_s']:.1f} -> {b['wall_s']:.1f} s")
    print("| point | RSS MiB a -> b | peak since last a -> b | growth of peak: B/video | B/shard | anon B/video | "
          "shmem B/video | arrow B/video | refs a -> b | gc objects a -> b |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pa_, pb in zip(a["points"], b["points"]):
        if pa_["point"] != pb["point"]:
            print(f"| points differ: {pa_['point']} / {pb['point']} |")
            break
        grow = (pb["peak_since_last_kib"] - pa_["peak_since_last_kib"]) * 1024
        print(f"| {pa_['point']} | {_mib(pa_['rss_kib'])} -> {_mib(pb['rss_kib'])} | "
              f"{_mib(pa_['peak_since_last_kib'])} -> {_mib(pb['peak_since_last_kib'])} | {grow / dv:.0f} | "
              f"{grow / ds:.0f} | {(pb['anon_kib'] - pa_['anon_kib']) * 1024 / dv:.0f} | "
              f"{(pb['shmem_kib'] - pa_['shmem_kib']) * 1024 / dv:.0f} | "
              f"{(pb['arrow_bytes'] - pa_['arrow_bytes']) / dv:.0f} | {pa_['object_refs']} -> {pb['object_refs']} | "
              f"{pa_['gc_objects']} -> {pb['gc_objects']} |")
    print(f"| driver peak (VmHWM) | {_mib(a['points'][-1]['hwm_kib'])} -> {_mib(b['points'][-1]['hwm_kib'])} | | "
          f"{(b['points'][-1]['hwm_kib'] - a['points'][-1]['hwm_kib']) * 1024 / dv:.0f} | "
          f"{(b['points'][-1]['hwm_kib'] - a['points'][-1]['hwm_kib']) * 1024 / ds:.0f} | | | | | |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="a build fabricated by benchmarks/scale.py (e.g. WORK/scale-0.05)")
    ap.add_argument("--stage", choices=sorted(POINTS), default="annotate")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="the --set overrides the build was fabricated with")
    ap.add_argument("--trace", action="store_true", help="tracemalloc allocation sites (slower; RSS includes its "
                                                         "own bookkeeping)")
    ap.add_argument("--json", help="write the points here")
    ap.add_argument("--compare", nargs=2, metavar=("SMALL.json", "LARGE.json"))
    args = ap.parse_args(argv)
    if args.compare:
        docs = []
        for path in args.compare:
            with open(path) as f:
                docs.append(json.load(f))
        compare(*docs)
        return 0
    if not args.out:
        ap.error("--out is required (or --compare)")
    doc = run(args)
    print_run(doc)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
