"""Driver memory, time and storage requests of a LongVid-sized build (issue 11).

    .venv/bin/python benchmarks/scale.py --fraction 0.01                # 1,142 videos, ~34k QA
    .venv/bin/python benchmarks/scale.py --fraction 0.1 --workers 1 --json scale-0.1-w1.json
    .venv/bin/python benchmarks/scale.py --fraction 0.002 --out s3://bucket/scale   # against an S3 endpoint
    .venv/bin/python benchmarks/scale.py --fraction 0.25 --set shard.target_bytes=2147483648   # ~36 videos a shard

Fabricates the committed outputs of a build of F x LongVid (benchmarks/scale_fabricate.py: crawl list, probe and
scene parts, shards of placeholder media, annotation tables) under --out, then runs the stages that follow them
(shard, annotate, mix, stats, report) one at a time, each in a fresh driver process calling `runner.run_build` as
the job does, on an in-process Ray with --workers CPUs. Per stage it prints wall time, the driver's peak RSS
(VmHWM), the largest Ray worker peak RSS (VmHWM of every worker process, polled), videos per second and the
driver's storage requests (calls into pipeline.io.storage that reach storage, not nested ones; on S3 the HTTP
requests botocore sends are counted too). Committed units of the fabricated stages are all present, so shard and
annotate do only their driver-side assembly; mix does its per-row work (payload copies) in Ray tasks. `--stages`
may also name `probe` and `scenes`: with every part committed they probe and scan nothing and do only their driver
work (planning the parts, rewriting the manifest, the build summary). `--stages` may name `hico` too: the build then
also gets the hico stage's committed outputs (records, index and placeholder token files; added to a reused build
that lacks them), so hico encodes nothing and does only its planning and index. Without `hico` in `--stages` no hico
output is fabricated, so the other stages (stats reads the hico index when there is one) measure what they did.
Before measuring, the outputs of the measured stages and of every stage after the first of them are removed, and
nothing else; a list whose stage would then lack an input (`--stages report` on a build without stats/) is refused
with exit status 2, naming the input and the stage to add (docs/scale.md, "Measuring it").
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import proc_status_kib  # noqa: E402

STAGES = ("shard", "annotate", "mix", "stats", "report")
# The stages --stages may name, in pipeline order (pipeline/stages/__init__.py).
ORDER = ("probe", "scenes", "shard", "hico", "annotate", "mix", "stats", "report")
_MANIFEST = ("manifest/videos.parquet", "manifest/rejects.parquet")
# What each stage writes over the fabricated build: removed before measuring it (and the stages after it, whose
# outputs would be made from older inputs), so every run does the same work. hico's fabricated outputs are its
# committed units and stay.
STAGE_OUTPUTS = {
    "probe": _MANIFEST, "scenes": _MANIFEST, "shard": _MANIFEST + ("shards/index.json", "manifest/plan"),
    "hico": (), "annotate": ("annotations/grounding_qvhighlights.jsonl",), "mix": ("mixtures", "work/mix"),
    "stats": ("stats",), "report": ("report.html",),
}
# Outputs of earlier stages a stage reads (the fabricated committed units aside).
STAGE_INPUTS = {
    "probe": (), "scenes": (), "shard": (),
    "hico": _MANIFEST[:1] + ("shards/index.json",), "annotate": _MANIFEST[:1] + ("shards/index.json",),
    "mix": _MANIFEST[:1] + ("shards/index.json",),
    "stats": _MANIFEST + ("shards/index.json", "annotations/grounding_qvhighlights.jsonl", "mixtures"),
    "report": _MANIFEST[:1] + ("stats",),
}
STORAGE_CALLS = ("exists", "size", "read_bytes", "read_range", "open_read", "list_files", "write_bytes",
                 "write_bytes_if_changed", "staged_output", "remove_files", "read_parquet", "write_parquet",
                 "remove_stale_temporaries")
OVERRIDES = ["annotate.backend=transformers", "annotate.tiny_demo_model=true"]


def build_config(out: str, source_dir: str, workers: int, endpoint: str | None, sets: list[str] = ()):
    """The build's config; `sets` are `--set` overrides (the job's syntax), applied after the benchmark's own."""
    from schemas import config as config_schema

    data = {"sources": [source_dir], "out": out, "stages": list(STAGES), "ray": {"num_cpus": workers},
            "storage": {"s3_endpoint_url": endpoint}}
    return config_schema.build(data, OVERRIDES + list(sets))


def default_out(work: str, fraction: float, sets: list[str]) -> str:
    """--work/scale-<F>, with the overrides in the name so builds of different settings live side by side."""
    name = f"scale-{fraction:g}"
    if sets:
        name += "-" + "-".join(re.sub(r"[^A-Za-z0-9._=-]+", "_", s) for s in sets)
    return os.path.join(work, name)


# ---------------------------------------------------------------------------------------------------------------
# Child: one stage in a fresh driver process


def _vm_hwm_kib(pid: int) -> int:
    return proc_status_kib(pid, ("VmHWM",))["VmHWM"]


RSS_PARTS = ("RssAnon", "RssFile", "RssShmem")  # /proc/<pid>/status: private heap, mapped files, shared memory


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _is_ray_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"default_worker.py" in cmd or cmd.startswith(b"ray::")


class WorkerPeaks(threading.Thread):
    """Polls the peak RSS of every Ray worker process below this driver, and the largest of each part of the
    driver's own RSS seen at a poll (anonymous memory, mapped files, shared memory such as Ray's object store)."""

    def __init__(self, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peaks: dict[int, int] = {}
        self.driver_parts = dict.fromkeys(RSS_PARTS, 0)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval_s)

    def sample(self) -> None:
        for key, kib in proc_status_kib(os.getpid(), RSS_PARTS).items():
            self.driver_parts[key] = max(self.driver_parts[key], kib)
        for pid in _descendants(os.getpid()):
            if pid not in self.peaks and not _is_ray_worker(pid):
                continue
            self.peaks[pid] = max(self.peaks.get(pid, 0), _vm_hwm_kib(pid))


class StorageCounter:
    """Counts the driver's storage operations: outermost calls into pipeline.io.storage, and on S3 the HTTP requests."""

    def __init__(self):
        self.calls = 0
        self.http = 0
        self._depth = 0

    def install(self) -> None:
        from pipeline.io import storage

        for name in STORAGE_CALLS:
            setattr(storage, name, self._wrap(name, getattr(storage, name)))
        real_client = storage.s3_client

        @functools.wraps(real_client)
        def client():
            c = real_client()
            if not getattr(c, "_scale_counted", False):
                c.meta.events.register("before-send.s3.*", self._on_http)
                c._scale_counted = True
            return c

        storage.s3_client = client

    def _on_http(self, **_):
        self.http += 1

    def _wrap(self, name, fn):
        import inspect

        counter = self
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*a, **k):
                counter._enter()
                try:
                    yield from fn(*a, **k)
                finally:
                    counter._depth -= 1
            return gen
        if name in ("open_read", "staged_output"):  # context managers
            @functools.wraps(fn)
            @contextlib.contextmanager
            def cm(*a, **k):
                counter._enter()
                try:
                    with fn(*a, **k) as v:
                        yield v
                finally:
                    counter._depth -= 1
            return cm

        @functools.wraps(fn)
        def call(*a, **k):
            counter._enter()
            try:
                return fn(*a, **k)
            finally:
                counter._depth -= 1
        return call

    def _enter(self) -> None:
        if self._depth == 0:
            self.calls += 1
        self._depth += 1


def run_child(stage: str, cfg_json: str, result_path: str) -> None:
    from pipeline.core import runner
    from schemas import config as config_schema

    cfg = config_schema.build(json.loads(cfg_json))
    counter = StorageCounter()
    counter.install()
    from pipeline.core import ray_runtime

    ray_runtime.init(cfg.ray.address, cfg.ray.num_cpus)
    peaks = WorkerPeaks()
    peaks.start()
    rss_before = _vm_hwm_kib(os.getpid())
    counter.calls = counter.http = 0
    t0 = time.monotonic()
    result = runner.run_build(cfg, [stage], quiet=True)
    wall = time.monotonic() - t0
    peaks.sample()
    peaks.stop.set()
    out = {"wall_s": wall, "driver_peak_rss_mib": _vm_hwm_kib(os.getpid()) / 1024,
           "driver_rss_before_mib": rss_before / 1024,
           **{f"driver_peak_{key[3:].lower()}_mib": kib / 1024 for key, kib in peaks.driver_parts.items()},
           "worker_peak_rss_mib": max(peaks.peaks.values(), default=0) / 1024, "workers_seen": len(peaks.peaks),
           "driver_storage_requests": counter.calls, "driver_http_requests": counter.http,
           "result": result["stages"].get(stage)}
    with open(result_path, "w") as f:
        json.dump(out, f, default=str)


# ---------------------------------------------------------------------------------------------------------------
# Parent


class StageListError(ValueError):
    """A --stages list that cannot be measured on this build (exit 2)."""


def parse_stages(text: str) -> list[str]:
    stages = [s for s in text.split(",") if s]
    unknown = [s for s in stages if s not in ORDER]
    if unknown:
        raise StageListError(f"--stages: unknown stage {unknown[0]!r}; the stages scale.py measures are "
                             f"{','.join(ORDER)}")
    if [ORDER.index(s) for s in stages] != sorted({ORDER.index(s) for s in stages}):
        raise StageListError(f"--stages {text}: name each stage once, in pipeline order "
                             f"({','.join(s for s in ORDER if s in stages)})")
    return stages


def outputs_to_reset(stages: list[str]) -> list[str]:
    """The outputs of the measured stages and of every stage after the first of them (pipeline order)."""
    if not stages:
        return []
    later = ORDER[ORDER.index(stages[0]):]
    return list(dict.fromkeys(rel for stage in later for rel in STAGE_OUTPUTS[stage]))


def check_inputs(stages: list[str], exists) -> None:
    """Raises StageListError, naming the input and the stage to add, when a measured stage would lack an input once
    the outputs are reset: one written by a stage before it that is not measured before it. `exists(rel)` says
    whether the build holds `rel` now."""
    reset = set(outputs_to_reset(stages))
    made: set[str] = set()
    for stage in stages:
        for rel in STAGE_INPUTS[stage]:
            if rel in made or (rel not in reset and exists(rel)):
                continue
            writer = max((s for s in ORDER[:ORDER.index(stage)] if rel in STAGE_OUTPUTS[s]), key=ORDER.index)
            why = "is missing from the build" if rel not in reset else "is removed before measuring"
            between = ORDER[ORDER.index(writer):ORDER.index(stage)]
            fixed = [s for s in ORDER if s in stages or (s in between and STAGE_OUTPUTS[s])]
            raise StageListError(f"--stages {','.join(stages)}: `{stage}` reads {rel}, which {why}; add `{writer}` "
                                 f"(the stage that writes it) and the stages after it: --stages {','.join(fixed)}")
        made.update(STAGE_OUTPUTS[stage])


def _present(uri: str) -> bool:
    """A file, or a folder (prefix) holding one."""
    from pipeline.io import storage

    if storage.exists(uri):
        return True
    if not storage.is_s3(uri) and not os.path.isdir(uri):
        return False
    return next(iter(storage.list_files(uri)), None) is not None


def reset_outputs(out: str, stages: list[str]) -> None:
    from pipeline.io import storage

    for rel in outputs_to_reset(stages):
        uri = storage.join(out, rel)
        if storage.is_s3(uri):
            storage.remove_files([u for u, _ in storage.list_files(uri)] + ([uri] if storage.exists(uri) else []))
        elif os.path.isdir(uri):
            shutil.rmtree(uri)
        elif os.path.exists(uri):
            os.unlink(uri)


def measure_stage(stage: str, cfg, timeout_s: float) -> dict:
    from schemas import config as config_schema

    result_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"scale-{os.getpid()}-{stage}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", stage, "--config-json",
           json.dumps(config_schema.to_dict(cfg)), "--result", result_path]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, env=env, timeout=timeout_s, stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed (exit {proc.returncode})")
    with open(result_path) as f:
        res = json.load(f)
    os.unlink(result_path)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fraction", type=float, default=0.002, help="share of LongVid's 114,228 videos")
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the in-process Ray (task parallelism)")
    ap.add_argument("--json", default=None, help="write the results here as JSON")
    ap.add_argument("--out", default=None, help="build folder or s3:// URI (default: --work/scale-<F>)")
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-out"))
    ap.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint for an s3:// --out (e.g. moto_server)")
    ap.add_argument("--stages", default=",".join(STAGES), help="which of the stages to measure, in order")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a build fabricated before with the same fraction, seed and --set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for the fabrication and every stage, as the job's --set (repeatable; e.g. "
                         "shard.target_bytes=2147483648 for shards of twice the size); --reuse compares them too")
    ap.add_argument("--timeout-s", type=float, default=3600.0, help="per stage")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--config-json", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child(args.child, args.config_json, args.result)
        return 0


    os.makedirs(args.work, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.out and args.out.startswith("s3://") and not args.s3_endpoint_url:
            args.s3_endpoint_url = stack.enter_context(_moto(args.out))
        return _measure(args)


@contextlib.contextmanager
def _moto(out: str):
    """A moto_server on 127.0.0.1 (tests/servers.py) holding the bucket of `out`, with placeholder credentials."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import servers

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ[k] = v
    with servers.moto_server() as endpoint:
        import boto3

        boto3.session.Session().client("s3", endpoint_url=endpoint).create_bucket(Bucket=out[5:].split("/")[0])
        print(f"[scale] moto_server at {endpoint}", file=sys.stderr, flush=True)
        yield endpoint


def _measure(args) -> int:
    from bench_common import load_average, markdown
    from scale_fabricate import LONGVID_QA, fabricate, fabricate_hico

    from pipeline.core.context import StageContext
    from pipeline.io import storage

    from schemas.config import ConfigError

    out = args.out or default_out(args.work, args.fraction, args.sets)
    storage.configure(args.s3_endpoint_url)
    try:
        cfg = build_config(out, args.work, args.workers, args.s3_endpoint_url, args.sets)
    except (ConfigError, ValueError) as e:
        print(f"scale.py: --set: {e}", file=sys.stderr)
        return 2
    marker = storage.join(out, "work/scale-fabricated.json")
    hico_marker = storage.join(out, "work/scale-hico-fabricated.json")
    want = {"fraction": args.fraction, "seed": args.seed, **({"set": args.sets} if args.sets else {})}
    try:
        stages = parse_stages(args.stages)
    except StageListError as e:
        print(f"scale.py: {e}", file=sys.stderr)
        return 2
    with_hico = "hico" in stages
    t0 = time.monotonic()
    if args.reuse and storage.exists(marker) and json.loads(storage.read_bytes(marker)) == want:
        counts = json.loads(storage.read_bytes(storage.join(out, "work/scale-counts.json")))
        print(f"[scale] reusing the build fabricated in {out}", file=sys.stderr)
    else:
        if not storage.is_s3(out) and os.path.isdir(out):
            shutil.rmtree(out)
        elif storage.is_s3(out):
            storage.remove_files([u for u, _ in storage.list_files(out)])
        counts = fabricate(StageContext(cfg), args.fraction, args.seed,
                           log=lambda m: print(m, file=sys.stderr, flush=True), hico=with_hico)
        storage.write_bytes(storage.join(out, "work/scale-counts.json"), json.dumps(counts).encode())
        storage.write_bytes(marker, json.dumps(want).encode())
        if with_hico:
            storage.write_bytes(hico_marker, json.dumps(want).encode())
    try:
        check_inputs(stages, lambda rel: _present(storage.join(out, rel)))
    except StageListError as e:
        print(f"scale.py: {e}", file=sys.stderr)
        return 2
    if with_hico and not (storage.exists(hico_marker) and json.loads(storage.read_bytes(hico_marker)) == want):
        fabricate_hico(StageContext(cfg), args.fraction, args.seed,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
        storage.write_bytes(hico_marker, json.dumps(want).encode())
    fabricate_s = time.monotonic() - t0
    reset_outputs(out, stages)
    load = load_average()
    results = {}
    for stage in stages:
        print(f"[scale] measuring {stage} ...", file=sys.stderr, flush=True)
        results[stage] = measure_stage(stage, cfg, args.timeout_s)
        print(f"[scale] {stage}: {json.dumps({k: v for k, v in results[stage].items() if k != 'result'})}",
              file=sys.stderr, flush=True)

    rows = []
    for stage, r in results.items():
        rows.append([stage, f"{r['wall_s']:.1f}", f"{r['driver_peak_rss_mib']:.0f}", f"{r['worker_peak_rss_mib']:.0f}",
                     f"{counts['videos'] / r['wall_s']:.0f}", str(r["driver_storage_requests"]),
                     str(r["driver_http_requests"]) if storage.is_s3(out) else "—"])
    total = sum(r["wall_s"] for r in results.values())
    print(f"\nLongVid at F = {args.fraction:g}: {counts['videos']} videos ({counts['inputs']} inputs), {counts['shards']} "
          f"shards ({counts['videos'] / max(counts['shards'], 1):.1f} videos a shard), {counts['qa']} QA "
          f"(LongVid {LONGVID_QA} x F = {round(LONGVID_QA * args.fraction)}), "
          f"{counts['captions']} captions, {counts['grounding']} grounding; {args.workers} workers; "
          f"load average {load:.1f} at start; fabrication {fabricate_s:.0f} s (not counted)\n")
    print(markdown(["stage", "wall (s)", "driver peak RSS (MiB)", "largest worker peak RSS (MiB)", "videos/s",
                    "driver storage requests", "driver HTTP requests"], rows))
    print(f"\nwhole driver-side run: {total:.1f} s")
    if args.json:
        doc = {"fraction": args.fraction, "videos": counts["videos"], "qa": counts["qa"], "shards": counts["shards"],
               "workers": args.workers, **({"set": args.sets} if args.sets else {}),
               "stages": {s: {k: r[k] for k in ("wall_s", "driver_peak_rss_mib", "worker_peak_rss_mib",
                                                "driver_storage_requests", "driver_http_requests",
                                                "driver_peak_anon_mib", "driver_peak_file_mib",
                                                "driver_peak_shmem_mib")}
                          for s, r in results.items()}}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
