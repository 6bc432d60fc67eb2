"""Annotation throughput on the CPU with the tiny random-weight models, and how long the model waits for input.

    .venv/bin/python benchmarks/annotate.py [--quick] [--work DIR] [--threads N]

Two measurement groups, each printed as a Markdown table (stdout) after an environment line; `[bench]` progress
notes and the pipeline's own lines go to stderr.

1. Backend throughput: for each backend (`transformers`, `hico_mllm`) a tiny checkpoint is built in a temporary
   folder (annotators.tiny_transformers_vlm / annotators.tiny_hico_mllm), loaded as the annotate stage loads it
   (cpu, float32, batch_size 8, GenerationParams(max_new_tokens=32)), warmed up, then `generate` is timed on
   `batches` distinct batches of 8 caption requests (the `clip_caption` prompt and system text, 8 uint8 frames of
   224x224 per request with their timestamps, window lengths of 4-12 s). hico_mllm runs twice: with frames (the
   vision tower runs inside `generate`) and with precomputed `hico_tokens` [2, 64, 64] float16 instead (what the
   annotate stage passes when the hico stage has run: no second vision pass). Variants are interleaved repeat by
   repeat; medians are reported. Generated tokens are counted from the backend's own ids (`generate_tokens` /
   `generate_ids`), with the stop token counted where generation stopped early, so both backends count alike.
   torch runs with --threads threads (default 1: the stage's actor holds one CPU and Ray gives it one thread).
2. Input wait in the annotate pipeline: synthetic videos (pipeline.synthetic, 20-40 s, scenes of 4-10 s, one
   video per shard via shard.max_samples=1) go through `ingest` (one `runner.run_build`); then per backend the
   real `annotate` stage is run (`runner.run_build(stage_names=['annotate'])`, tiny_demo_model, max_new_tokens
   32, batch_size 8) for its wall time, and its two-step Ray Data pipeline is rebuilt here from the stage's own
   pieces (`_units`, `decode_unit`, `Annotator`: `map_batches(decode_unit)` -> `map_batches(Annotator,
   ActorPoolStrategy(size=1))`, iterated with `iter_rows()`) with a thin timing subclass of `Annotator` and a
   timing wrapper around `decode_unit`. The subclass records, per call, the time since its previous call ended
   (waiting for input: nothing to work on), the time inside `__call__` (working) and, inside that, the time in
   `backend.generate`; the wait is split into the part during which this call's input was still being decoded
   and the rest (Ray Data's hand-over between calls). The first call (actor warm-up, first-batch effects) is
   excluded; the target is a waiting share under 10 % of the actor's wall time. The pipeline is rebuilt twice:
   exactly as the stage builds it (on CPU Ray Data fuses the decode step into the actor operator, so decoding
   runs inside the actor, between calls) and with the decode step kept in separate tasks (what the stage's
   docstring describes). The rebuilt pipelines write their tables to scratch folders; the stage's output is
   untouched.

Inputs are made once and cached under --work (default ./bench-out, git-ignored). Ray runs in-process with 2 CPUs
(the stage asks one for each decode task and one for the actor) and is warmed up before anything is timed.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tiny checkpoints are built locally; nothing may be downloaded
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import bench_common  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from annotators import prompts  # noqa: E402
from annotators.backends.base import GenerationParams, Request  # noqa: E402
from pipeline import synthetic  # noqa: E402
from pipeline.core import runner  # noqa: E402
from pipeline.core.context import StageContext  # noqa: E402
from pipeline.stages import annotate as annotate_stage  # noqa: E402
from schemas import config as config_schema  # noqa: E402

BACKENDS = ("transformers", "hico_mllm")
NUM_CPUS = 2
BATCH_SIZE = 8
MAX_NEW_TOKENS = 32
FRAMES = 8
FRAME_SIZE = 224
HICO_SHAPE = (2, 64, 64)  # [n_clips, 64 tokens per clip, C of the tiny encoder]
WAIT_TARGET = 0.10


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class Plan:
    """Sizes and repeat counts of one run (full or --quick)."""

    batches: int  # distinct batches of BATCH_SIZE requests timed per repeat
    repeats: int
    warmup: int  # generate calls before timing (the first one is slow: lazy imports, kernel selection)
    videos: int  # synthetic videos (= shards) in the pipeline measurement

    @classmethod
    def make(cls, quick: bool) -> "Plan":
        if quick:
            return cls(batches=2, repeats=3, warmup=2, videos=4)
        return cls(batches=4, repeats=7, warmup=2, videos=8)


# ---------------------------------------------------------------------------------------------------------------
# 1. Backend throughput


def build_checkpoint(backend: str, directory: str) -> str:
    if backend == "hico_mllm":
        from annotators.tiny_hico_mllm import build_tiny_checkpoint
    else:
        from annotators.tiny_transformers_vlm import build_tiny_checkpoint
    return build_tiny_checkpoint(directory, seed=0) or directory


def load_backend(backend: str, checkpoint: str):
    params = GenerationParams(max_new_tokens=MAX_NEW_TOKENS)
    if backend == "hico_mllm":
        from annotators.backends.hico_mllm import HicoMllmBackend as cls
    else:
        from annotators.backends.transformers_backend import TransformersBackend as cls
    return cls(checkpoint, device="cpu", dtype="float32", batch_size=BATCH_SIZE, params=params)


def caption_requests(n: int, seed: int, tokens: bool) -> list[Request]:
    """`n` caption requests as VideoAnnotator makes them: 8 uint8 frames (or [2, 64, 64] HiCo clips) of a 4-12 s
    window, their timestamps, the clip_caption prompt and system text."""
    prompt = prompts.load("clip_caption")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        duration = float(rng.uniform(4.0, 12.0))
        stamps = [round((k + 0.5) * duration / FRAMES, 3) for k in range(FRAMES)]
        if tokens:
            clips = (rng.standard_normal(HICO_SHAPE) * 0.5).astype(np.float16)
            out.append(Request(prompt.render(), None, stamps, duration, f"bench-{seed}-{i}", clips, prompt.system,
                               extra={"num_frames": FRAMES}))
        else:
            frames = rng.integers(0, 256, (FRAMES, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
            out.append(Request(prompt.render(), frames, stamps, duration, f"bench-{seed}-{i}", None, prompt.system))
    return out


def generate_counted(backend, requests: list[Request]) -> int:
    """Run the backend on `requests`; return the number of generated tokens (stop token included where generation
    stopped before max_new_tokens; the transformers backend keeps it in its ids, hico_mllm strips it)."""
    if hasattr(backend, "generate_tokens"):
        ids = backend.generate_tokens(requests)
        return sum(len(s) for s in ids)
    if hasattr(backend, "generate_ids"):
        ids = backend.generate_ids(requests)
        return sum(min(len(s) + 1, MAX_NEW_TOKENS) for s in ids)
    texts = backend.generate(requests)
    return sum(len(backend.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


@dataclass
class Variant:
    backend: str
    label: str
    obj: object
    batches: list[list[Request]]
    times: list[float] = dataclasses.field(default_factory=list)
    tokens: list[int] = dataclasses.field(default_factory=list)


def measure_backends(plan: Plan, tmp: str) -> tuple[list[list[str]], dict]:
    variants: list[Variant] = []
    info = {}
    for backend in BACKENDS:
        t0 = time.monotonic()
        ckpt = build_checkpoint(backend, os.path.join(tmp, f"tiny-{backend}"))
        built = time.monotonic() - t0
        t0 = time.monotonic()
        obj = load_backend(backend, ckpt)
        log(f"{backend}: tiny checkpoint built in {built:.1f} s, loaded in {time.monotonic() - t0:.2f} s")
        info[backend] = {"params": sum(p.numel() for p in obj.model.parameters())}
        frame_batches = [caption_requests(BATCH_SIZE, seed=100 * b, tokens=False) for b in range(plan.batches)]
        variants.append(Variant(backend, f"{FRAMES} frames {FRAME_SIZE}²", obj, frame_batches))
        if backend == "hico_mllm":
            info[backend]["params"] += sum(p.numel() for p in obj.projector.parameters())
            token_batches = [caption_requests(BATCH_SIZE, seed=100 * b, tokens=True) for b in range(plan.batches)]
            variants.append(Variant(backend, "hico_tokens [2, 64, 64] f16", obj, token_batches))
            # the vision pass alone (what precomputed tokens save): ClipEncoder on one request's frames
            req = frame_batches[0][0]
            enc_times = []
            for k in range(plan.warmup + plan.repeats * 2):
                t0 = time.perf_counter()
                obj.clip_tokens(req)
                if k >= plan.warmup:
                    enc_times.append(time.perf_counter() - t0)
            info[backend]["vision_ms_per_request"] = 1000 * statistics.median(enc_times)
    for v in variants:
        t0 = time.monotonic()
        for batch in v.batches + [v.batches[0]] * max(plan.warmup - 1, 0):
            generate_counted(v.obj, batch)
        log(f"{v.backend} / {v.label}: warm-up ({len(v.batches) + max(plan.warmup - 1, 0)} batches) "
            f"{time.monotonic() - t0:.1f} s")
    for rep in range(plan.repeats):
        for v in variants:  # interleaved, so load from other work hits every variant alike
            n_tokens = 0
            t0 = time.perf_counter()
            for batch in v.batches:
                n_tokens += generate_counted(v.obj, batch)
            v.times.append(time.perf_counter() - t0)
            v.tokens.append(n_tokens)
        log(f"repeat {rep + 1}/{plan.repeats}: " + ", ".join(f"{v.backend}/{v.label.split()[0]} {v.times[-1]:.2f} s"
                                                             for v in variants))
    rows = []
    n_req = plan.batches * BATCH_SIZE
    for v in variants:
        t = statistics.median(v.times)
        tok = statistics.median(v.tokens)
        vision = "—"
        if v.backend == "hico_mllm":
            vision = f"{info['hico_mllm']['vision_ms_per_request']:.1f}" if "frames" in v.label else "0 (precomputed)"
        rows.append([v.backend, v.label, str(BATCH_SIZE), f"{n_req / t:.2f}", f"{tok / t:.0f}",
                     f"{1000 * t / plan.batches:.0f}", f"{tok / n_req:.1f}", vision,
                     f"{min(v.times):.2f}–{max(v.times):.2f}"])
    return rows, info


# ---------------------------------------------------------------------------------------------------------------
# 2. Input wait in the annotate pipeline


def timed_decode_unit(batch: dict, cfg) -> dict:
    """`decode_unit` plus when and in which process it ran (passed on to the actor in an extra column)."""
    t0 = time.time()
    out = annotate_stage.decode_unit(batch, cfg)
    stamp = json.dumps({"start": t0, "end": time.time(), "pid": os.getpid()})
    out["decode"] = [stamp] * len(out["payload"])
    return out


class TimedAnnotator(annotate_stage.Annotator):
    """The stage's actor, timed: per call the wait since the previous call ended (since the model was ready, for
    the first), the time inside __call__ and the time inside backend.generate (with request count)."""

    def __init__(self, cfg, device: str):
        super().__init__(cfg, device)
        backend = self.annotator.backend
        generate = backend.generate
        self._gen = {"s": 0.0, "requests": 0, "calls": 0}

        def timed_generate(requests):
            t0 = time.time()
            try:
                return generate(requests)
            finally:
                self._gen["s"] += time.time() - t0
                self._gen["requests"] += len(requests)
                self._gen["calls"] += 1

        backend.generate = timed_generate
        self._ready = time.time()
        self._last_end = self._ready

    def __call__(self, batch: dict) -> dict:
        start = time.time()
        self._gen = {"s": 0.0, "requests": 0, "calls": 0}
        out = super().__call__(batch)
        end = time.time()
        shards = [json.loads(r)["shard"] for r in out["record"]]
        decode = [json.loads(d) for d in batch.get("decode", [])]
        out["timing"] = [json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads(), "ready": self._ready,
                                     "prev_end": self._last_end, "start": start, "end": end,
                                     "generate_s": self._gen["s"], "requests": self._gen["requests"],
                                     "generate_calls": self._gen["calls"], "decode": decode, "shards": shards})
                         ] * len(out["record"])
        self._last_end = end
        return out


def pipeline_config(sources: list[str], out: str, backend: str, quick: bool):
    overrides = [f"ray.num_cpus={NUM_CPUS}", "shard.max_samples=1", "annotate.tiny_demo_model=true",
                 f"annotate.backend={backend}", f"annotate.max_new_tokens={MAX_NEW_TOKENS}",
                 f"annotate.batch_size={BATCH_SIZE}", "annotate.device=cpu", "annotate.dtype=float32"]
    return config_schema.build({"sources": sources, "out": out}, overrides)


def scene_plan(n_videos: int, seed: int = 0) -> list[list[float]]:
    """Per video, whole-second scenes of 4-10 s adding up to 20-40 s (deterministic)."""
    rng = random.Random(seed)
    plans = []
    for _ in range(n_videos):
        total = rng.randint(20, 40)
        scenes: list[float] = []
        while sum(scenes) < total:
            left = total - sum(scenes)
            d = rng.randint(4, 10)
            scenes.append(float(left if left - d < 4 else d))
        plans.append(scenes)
    return plans


def make_videos(work: str, n: int) -> list[str]:
    folder = os.path.join(work, "inputs", "annotate-videos")
    paths = []
    for i, scenes in enumerate(scene_plan(n)):
        path = os.path.join(folder, f"video{i:02d}.mp4")
        if not os.path.isfile(path):
            log(f"making {path} ({sum(scenes):g} s, {len(scenes)} scenes)")
            tmp = os.path.join(folder, f".partial-video{i:02d}.mp4")
            synthetic.write(synthetic.SyntheticVideo(scenes, width=320, height=240, fps=25), tmp)
            os.replace(tmp, path)
        paths.append(path)
    return paths


def redirect(unit: dict, scratch: str) -> dict:
    """The unit with its output tables and record under `scratch` (the stage's own output stays untouched)."""
    unit = dict(unit)
    unit["out_uris"] = {t: os.path.join(scratch, t, os.path.basename(u)) for t, u in unit["out_uris"].items()}
    unit["record_uri"] = os.path.join(scratch, "records", os.path.basename(unit["record_uri"]))
    return unit


def rebuilt_pipeline(cfg, units: list[dict], fused: bool) -> tuple[list[dict], float, str]:
    """The stage's Ray Data pipeline with the timing actor; returns the per-call timings, wall seconds and the
    executed plan. `fused=False` builds it exactly as the stage does (a decode task pool one larger than the actor
    pool, which Ray Data does not fuse into the actors); `fused=True` gives the decode pool the actor pool's size,
    so Ray Data fuses decoding into the actor (what the stage did before), for comparison."""
    import ray

    from pipeline.stages.hico import resolve_gpus

    gpus, device = resolve_gpus(cfg.annotate.num_gpus)
    device = cfg.annotate.device if cfg.annotate.device != "auto" else device
    t0 = time.monotonic()
    ds = ray.data.from_items([{"unit": json.dumps(u)} for u in units], override_num_blocks=len(units))
    decoders = ray.data.TaskPoolStrategy(size=cfg.annotate.pool_size + (0 if fused else 1))
    ds = ds.map_batches(timed_decode_unit, fn_kwargs={"cfg": cfg}, batch_size=1, num_cpus=1, compute=decoders)
    ds = ds.map_batches(TimedAnnotator, fn_constructor_kwargs={"cfg": cfg, "device": device}, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=cfg.annotate.pool_size), num_gpus=gpus, num_cpus=1)
    calls = [json.loads(row["timing"]) for row in ds.iter_rows()]
    wall = time.monotonic() - t0
    try:
        stats = ds.stats()
    except Exception as exc:  # noqa: BLE001 - stats are informational only
        stats = f"(ds.stats() failed: {exc})"
    unique = {json.dumps(c, sort_keys=True): c for c in calls}  # one row per shard; calls hold one shard each
    return sorted(unique.values(), key=lambda c: c["start"]), wall, stats


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def wait_summary(calls: list[dict]) -> dict:
    """Seconds of the actor's wall time over the warm calls (all but the first), split into: generating (inside
    backend.generate), other work inside __call__ (unpickling, validation, Parquet writes), waiting while this
    call's input was still being decoded, and the rest of the wait (Ray Data hand-over between calls)."""
    warm = calls[1:]
    gaps = [(c["prev_end"], c["start"]) for c in warm]
    wait = sum(max(b - a, 0.0) for a, b in gaps)
    wait_decode = sum(_overlap(a, b, d["start"], d["end"]) for (a, b), c in zip(gaps, warm) for d in c["decode"])
    work = sum(c["end"] - c["start"] for c in warm)
    gen = sum(c["generate_s"] for c in warm)
    total = wait + work
    span = (warm[-1]["end"] - warm[0]["prev_end"]) if warm else 0.0
    actor_pids = {c["pid"] for c in calls}
    decode_pids = {d["pid"] for c in calls for d in c["decode"]}
    where = ("actor (fused)" if decode_pids <= actor_pids else
             "separate tasks" if not decode_pids & actor_pids else "both")
    nan = float("nan")
    return {"calls": len(calls), "warm": len(warm), "wait": wait, "wait_decode": wait_decode, "work": work,
            "generate": gen, "total": total, "share": wait / total if total > 0 else nan,
            "max_wait": max((b - a for a, b in gaps), default=0.0),
            "first_wait": calls[0]["start"] - calls[0]["ready"] if calls else 0.0,
            "first_work": calls[0]["end"] - calls[0]["start"] if calls else 0.0,
            "shards_per_s": len(warm) / span if span > 0 else nan,
            "requests": sum(c["requests"] for c in warm), "where": where,
            "threads": sorted({c["threads"] for c in calls}),
            "decode": statistics.median([d["end"] - d["start"] for c in calls for d in c["decode"]] or [nan])}


def pipeline_row(backend: str, label: str, stage_wall: float | None, wall: float, s: dict) -> list[str]:
    total = s["total"]

    def pct(x: float) -> str:
        return f"{100 * x / total:.1f} %" if total > 0 else "—"

    ok = s["share"] < WAIT_TARGET
    return [backend, label, s["where"], f"{stage_wall:.1f}" if stage_wall is not None else "—", f"{wall:.1f}",
            f"{s['warm']}", f"{s['shards_per_s']:.2f}", f"{s['requests'] / max(s['warm'], 1):.1f}",
            f"{s['decode']:.2f}", pct(s["generate"]), pct(s["work"] - s["generate"]), pct(s["wait_decode"]),
            pct(s["wait"] - s["wait_decode"]), f"**{100 * s['share']:.1f} %**", f"{s['max_wait']:.2f}",
            "yes" if ok else "no"]


def measure_pipeline(plan: Plan, work: str, quick: bool) -> tuple[list[list[str]], list[int]]:
    sources = make_videos(work, plan.videos)
    log(f"starting Ray in-process with {NUM_CPUS} CPUs (not timed)")
    t0 = time.monotonic()
    bench_common.warm_up_ray(NUM_CPUS, "pipeline.stages.annotate")
    log(f"Ray up and warm in {time.monotonic() - t0:.1f} s")

    base = os.path.join(work, "runs", "annotate-ingest")
    shutil.rmtree(base, ignore_errors=True)
    t0 = time.monotonic()
    result = runner.run_build(pipeline_config(sources, base, BACKENDS[0], quick), stage_names=["ingest"], quiet=True)
    log(f"ingest of {len(sources)} videos in {time.monotonic() - t0:.1f} s: {result['stages'].get('shard')}")

    rows, threads = [], set()
    for backend in BACKENDS:
        out = os.path.join(work, "runs", f"annotate-{backend}")
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(base, out)
        cfg = pipeline_config(sources, out, backend, quick)
        # the units the stage would run, taken before it runs (afterwards they are all committed)
        ctx = StageContext(cfg)
        _, todo = annotate_stage._units(ctx)

        t0 = time.monotonic()
        stage_result = runner.run_build(cfg, stage_names=["annotate"], quiet=True)["stages"]["annotate"]
        stage_wall = time.monotonic() - t0
        log(f"{backend}: annotate stage {stage_wall:.1f} s: {stage_result}")

        for fused in (True, False):
            label = "decode fused into the actor (comparison)" if fused else "as the stage builds it"
            scratch = os.path.join(work, "runs", f"annotate-{backend}-rebuilt-{'fused' if fused else 'apart'}")
            shutil.rmtree(scratch, ignore_errors=True)
            units = [redirect(u, scratch) for u in todo]
            calls, wall, stats = rebuilt_pipeline(cfg, units, fused)
            s = wait_summary(calls)
            log(f"{backend} / {label}: rebuilt pipeline {wall:.1f} s, {s['calls']} actor calls, decode ran in "
                f"{s['where']}, actor torch threads {s['threads']}; first call waited {s['first_wait']:.2f} s and "
                f"worked {s['first_work']:.2f} s (excluded)")
            for c in calls:
                dec = sum(d["end"] - d["start"] for d in c["decode"])
                log(f"  {','.join(c['shards'])}: waited {c['start'] - c['prev_end']:6.3f} s, worked "
                    f"{c['end'] - c['start']:6.3f} s (generate {c['generate_s']:6.3f} s, {c['requests']} requests), "
                    f"decode {dec:.3f} s")
            plan_lines = [ln for ln in str(stats).splitlines() if ln.startswith("Operator")]
            log(f"{backend} / {label}: ds.stats() operators: " + " | ".join(plan_lines))
            rows.append(pipeline_row(backend, label, None if fused else stage_wall, wall, s))
            threads.update(s["threads"])
    return rows, sorted(threads)


# ---------------------------------------------------------------------------------------------------------------
# Report


THROUGHPUT_COLUMNS = ["backend", "input per request", "batch", "requests/s", "generated tokens/s", "ms per batch",
                      "tokens per request", "vision pass (ms/request)", "repeat range (s)"]
PIPELINE_COLUMNS = ["backend", "pipeline", "decode runs in", "annotate stage wall (s)", "rebuilt wall (s)",
                    "warm calls", "warm shards/s", "requests per shard", "decode per shard (s, median)",
                    "generate", "other in-call work", "wait: input still decoding", "wait: hand-over",
                    "waiting for input", "longest wait (s)", f"< {WAIT_TARGET:.0%}"]


def environment() -> str:
    import ray
    import transformers

    load = bench_common.load_average()
    return (f"{os.cpu_count()} cores visible, {platform.machine()}, Python {platform.python_version()}, torch "
            f"{torch.__version__} ({torch.get_num_threads()} thread(s) in-process), transformers "
            f"{transformers.__version__}, ray {ray.__version__} in-process with {NUM_CPUS} CPUs, load average "
            f"{load:.2f} at start.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer batches, repeats and videos (about 1.5 minutes instead of 2)")
    p.add_argument("--work", default=os.path.join(os.getcwd(), "bench-out"),
                   help="cache of inputs and output folders (default ./bench-out)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the in-process throughput table (default 1, as in the stage's actor, "
                        "which holds 1 CPU)")
    p.add_argument("--skip-pipeline", action="store_true", help="only the backend throughput table")
    args = p.parse_args(argv)
    torch.set_num_threads(max(args.threads, 1))
    plan = Plan.make(args.quick)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    env = environment()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    started = time.monotonic()

    with contextlib.redirect_stdout(sys.stderr):  # progress lines → stderr; the tables alone → stdout
        tmp = tempfile.mkdtemp(prefix="longvid-bench-annotate-", dir=work)
        try:
            throughput, info = measure_backends(plan, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        pipeline_rows = None
        if not args.skip_pipeline:
            pipeline_rows, actor_threads = measure_pipeline(plan, work, args.quick)

    print(env)
    print()
    print(f"### Backend throughput (direct `generate`, in-process, cpu float32, batch {BATCH_SIZE}, greedy, "
          f"max_new_tokens {MAX_NEW_TOKENS}; {plan.batches} batches per repeat, median of {plan.repeats})")
    print()
    print(bench_common.markdown(THROUGHPUT_COLUMNS, throughput))
    print()
    print("Tiny random-weight checkpoints: " + ", ".join(f"{b} {info[b]['params'] / 1e6:.2f} M LM(+projector) "
                                                         f"parameters" for b in BACKENDS) + ".")
    if pipeline_rows is not None:
        print()
        print(f"### Annotate pipeline: time the annotator actor waits for input ({plan.videos} synthetic videos of "
              f"20–40 s, one per shard; shares of the actor's wall time over the warm calls, first call excluded; "
              f"actor torch threads {actor_threads})")
        print()
        print(bench_common.markdown(PIPELINE_COLUMNS, pipeline_rows))
    log(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(bench_common.run_and_record("annotate", main))
