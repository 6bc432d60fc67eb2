"""Wall time and accuracy of the `ingest` stages (crawl, probe, scenes, shard) beside a full ffmpeg decode.

    .venv/bin/python benchmarks/ingest.py [--work DIR] [--hour-seconds N] [--real-seconds N] [--repeats N]
                                          [--skip-transnet]

Inputs, made once and cached under the work dir (default ./bench-out, git-ignored); making them is not timed:

1. a synthetic 320x240 @ 25 fps H.264 video of `--hour-seconds` seconds (default 3600) made by pipeline.synthetic,
   scenes of 60-300 s joined by hard cuts at known times;
2. real footage joined by hard cuts, cross-dissolves and fades through black at known times
   (pipeline.ingest.shots.joined_clips, from the clips in tests/data/media): one 63 s cycle at 640x360 @ 25 fps, and
   that cycle repeated to about `--real-seconds` (default 600).

Every row is one `run_build` per stage in a fresh output folder on an in-process Ray with 2 CPUs (started, its
workers warmed up and one untimed ingest of the short cycle, split into segments, run first: a job pays its
imports once, not per video), beside `ffmpeg -threads 2 -i X -f null -` on the same file, timed right after it;
each row alternates the two `--repeats` times and reports medians (the ratio column). Rows: the default `fast`
detector; the same with `scenes.segment_s` above the video's length (one task: what segments buy on 2 CPUs); on
the 63 s cycle, TransNetV2 on the CPU and two PySceneDetect detectors for comparison. Recall counts a transition
as found when a boundary lies within 0.5 s of it (a gradual one's middle); precision is the share of boundaries
that match a transition, each at most once. A second table sets the segment-parallel speed-up beside this
machine's own ceiling: two single-threaded ffmpeg decodes at once against one (two vCPUs that share a physical
core's units cannot give 0.5x).

The table is printed to stdout in Markdown; the pipeline's own progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time

import bench_common

from pipeline import synthetic
from pipeline.core import runner
from pipeline.ingest.shots import joined_clips
from pipeline.io import ffmpeg
from schemas import config as config_schema
from schemas import layout

STAGES = ("crawl", "probe", "scenes", "shard")
NUM_CPUS = 2
REAL_SIZE = (640, 360)
WARM_UP_SEGMENT_S = 30.0  # the warm-up splits the 63 s cycle into segments


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Inputs (made once, cached; never timed)


def scene_durations(total_s: float, lo: float = 60.0, hi: float = 300.0, seed: int = 0) -> list[float]:
    """Whole-second scene lengths in [lo, hi] summing to `total_s` (deterministic); one scene if total_s < lo."""
    rng = random.Random(seed)
    durations: list[float] = []
    left = float(total_s)
    while left > 0:
        if left <= hi:
            d = left
        else:
            d = float(rng.randint(int(lo), int(hi)))
            if left - d < lo:  # keep the last scene at least `lo` long
                d = left - lo if left - lo >= lo else left
        durations.append(d)
        left -= d
    return durations


def _atomic_make(path: str, make) -> str:
    """Run `make(tmp_path)` and rename into place, so an interrupted run never leaves a cached half file."""
    if os.path.isfile(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.partial{ext}"
    make(tmp)
    os.replace(tmp, path)
    return path


def synthetic_input(work: str, seconds: float) -> tuple[str, synthetic.SyntheticVideo]:
    video = synthetic.SyntheticVideo(scene_durations(seconds), width=320, height=240, fps=25)
    path = os.path.join(work, "inputs", f"synthetic-{seconds:g}s-320x240", "synthetic.mp4")
    if not os.path.isfile(path):
        log(f"making the synthetic input ({seconds:g} s, {len(video.scene_durations_s)} scenes): {path}")
        t0 = time.monotonic()
        _atomic_make(path, lambda tmp: synthetic.write(video, tmp))
        log(f"made it in {time.monotonic() - t0:.1f} s")
    return path, video


def real_inputs(work: str, seconds: float) -> tuple[tuple[str, list, float], tuple[str, list, float]]:
    """((path, transitions, length) of one cycle, and of the cycle repeated to about `seconds`)."""
    w, h = REAL_SIZE
    folder = os.path.join(work, "inputs", f"joined-{w}x{h}")
    cycle = os.path.join(folder, "cycle", "cycle.mp4")
    _atomic_make(cycle, lambda tmp: joined_clips.write(tmp, w, h))
    _, cycle_truth, cycle_s = joined_clips.plan(1)
    times = max(1, round(seconds / cycle_s))
    long = os.path.join(folder, f"x{times}", f"joined-x{times}.mp4")
    _atomic_make(long, lambda tmp: joined_clips.repeat(cycle, times, tmp))
    _, long_truth, long_s = joined_clips.plan(times)
    return (cycle, cycle_truth, cycle_s), (long, long_truth, long_s)


def duration_of(path: str) -> float:
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        if s.duration is not None and s.time_base:
            return float(s.duration * s.time_base)
        return c.duration / 1_000_000


# ---------------------------------------------------------------------------------------------------------------
# Measurements


def ffmpeg_decode_s(path: str) -> float:
    cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-threads", "2", "-i", path,
           "-f", "null", "-"]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True)
    return time.monotonic() - t0


def build_config(source: str, out: str, overrides: list[str]):
    return config_schema.build({"sources": [source], "out": out}, [f"ray.num_cpus={NUM_CPUS}", *overrides])


def measure_ingest(source: str, out: str, overrides: list[str]) -> tuple[dict[str, float], list[float]]:
    """Fresh output folder; one run_build per stage, in order. Per-stage seconds and the boundaries found."""
    shutil.rmtree(out, ignore_errors=True)
    times = {}
    for name in STAGES:
        cfg = build_config(source, out, overrides)
        t0 = time.monotonic()
        result = runner.run_build(cfg, stage_names=[name], quiet=True)
        times[name] = time.monotonic() - t0
        log(f"{os.path.basename(source)} {overrides}: {name} {times[name]:.2f} s {result['stages'][name]}")
    return times, boundaries_found(out)


def measure_repeated(source: str, out: str, overrides: list[str], repeats: int) -> tuple[dict, list[float], float]:
    """`repeats` alternations of an ingest and the decode baseline: per-stage medians, the boundaries found, and the
    median decode time (alternating keeps both under the same share of a noisy machine)."""
    runs, decodes, found = [], [], []
    for _ in range(repeats):
        stage_s, found = measure_ingest(source, out, overrides)
        runs.append(stage_s)
        decodes.append(ffmpeg_decode_s(source))
    return {s: statistics.median(r[s] for r in runs) for s in STAGES}, found, statistics.median(decodes)


def parallel_decode_ceiling(path: str, repeats: int) -> tuple[float, float]:
    """(seconds of one `ffmpeg -threads 1` decode, seconds of two of them at once), medians of alternations: the best
    a split into two parallel single-threaded tasks can do on this machine is (two at once) / (2 x one)."""
    cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-threads", "1", "-i", path,
           "-f", "null", "-"]
    one, two = [], []
    for _ in range(repeats):
        t0 = time.monotonic()
        subprocess.run(cmd, check=True)
        one.append(time.monotonic() - t0)
        t0 = time.monotonic()
        procs = [subprocess.Popen(cmd) for _ in range(2)]
        for proc in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed on {path}")
        two.append(time.monotonic() - t0)
    return statistics.median(one), statistics.median(two)


def boundaries_found(out: str) -> list[float]:
    import pyarrow.parquet as pq

    videos = pq.read_table(os.path.join(out, layout.MANIFEST_VIDEOS), columns=["scenes"]).to_pylist()
    return [s["start_s"] for s in (videos[0]["scenes"] or [])[1:]]


def measure_rerun(source: str, out: str) -> tuple[float, dict]:
    cfg = build_config(source, out, [])
    t0 = time.monotonic()
    result = runner.run_build(cfg, stage_names=["ingest"], quiet=True)
    return time.monotonic() - t0, result["stages"]


# ---------------------------------------------------------------------------------------------------------------
# Report

COLUMNS = ["input", "detector", "video (s)", "ingest wall (s)", "ffmpeg -threads 2 decode (s)", "ratio ingest/decode",
           *[f"{s} (s)" for s in STAGES], "scenes frames/s", "cuts found", "gradual found", "precision"]


def row(label: str, detector: str, duration: float, fps: float, stage_s: dict[str, float] | None,
        decode_s: float, quality: dict | None, wall: float | None = None) -> list[str]:
    wall = sum(stage_s.values()) if wall is None and stage_s else wall
    cells = [label, detector, f"{duration:.1f}", f"{wall:.2f}", f"{decode_s:.2f}", f"{wall / decode_s:.2f}"]
    cells += [f"{stage_s[s]:.2f}" if stage_s and s in stage_s else "—" for s in STAGES]
    cells.append(f"{duration * fps / stage_s['scenes']:.0f}" if stage_s else "—")
    if quality:
        cells += [f"{quality['cuts_found']}/{quality['cuts']} ({quality['cut_recall']:.0%})",
                  f"{quality['gradual_found']}/{quality['gradual']} ({quality['gradual_recall']:.0%})"
                  if quality["gradual"] else "—",
                  f"{quality['true_positives']}/{quality['found']} ({quality['precision']:.0%})"]
    else:
        cells += ["—", "—", "—"]
    return cells


def synthetic_truth(video: synthetic.SyntheticVideo) -> list:
    return [joined_clips.Transition("cut", t, t) for t in video.cut_times_s]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=os.path.join(os.getcwd(), "bench-out"),
                   help="cache of inputs and output folders (default ./bench-out)")
    p.add_argument("--hour-seconds", type=float, default=3600.0,
                   help="length of the synthetic input in seconds (default 3600; smaller for a quick smoke run)")
    p.add_argument("--real-seconds", type=float, default=600.0,
                   help="length of the joined real footage (default 600)")
    p.add_argument("--repeats", type=int, default=3,
                   help="alternations of ingest and decode per row, medians reported (default 3; TransNetV2: 1)")
    p.add_argument("--skip-transnet", action="store_true", help="leave out the TransNetV2 row (CPU: ~1 min)")
    args = p.parse_args(argv)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)

    syn_path, syn_video = synthetic_input(work, args.hour_seconds)
    cycle, joined = real_inputs(work, args.real_seconds)
    load_start = bench_common.load_average()

    log(f"starting Ray in-process with {NUM_CPUS} CPUs (not timed)")
    t0 = time.monotonic()
    bench_common.warm_up_ray(NUM_CPUS, "pipeline.stages")
    log(f"Ray up and warm in {time.monotonic() - t0:.1f} s")
    # the first ingest of a process pays one-time imports in the driver and the workers (PyAV, the stage modules,
    # the worker process that a split video's stage-in task adds): a job pays them once, not per video, so a short
    # untimed ingest with a split video takes them out of the rows
    with contextlib.redirect_stdout(sys.stderr):
        t0 = time.monotonic()
        measure_ingest(cycle[0], os.path.join(work, "runs", "warm-up"), [f"scenes.segment_s={WARM_UP_SEGMENT_S:g}"])
        log(f"warm-up ingest of the {cycle[2]:.0f} s cycle (first in this process, not in the table): "
            f"{time.monotonic() - t0:.2f} s")

    rows = []
    syn_label = f"synthetic {synthetic_label(args.hour_seconds)} 320x240@25"
    one_task = [f"scenes.segment_s={10 * max(args.hour_seconds, args.real_seconds):g}"]
    plan = [
        (syn_label, syn_path, synthetic_truth(syn_video), "fast", []),
        (syn_label, syn_path, synthetic_truth(syn_video), "fast, one task", one_task),
        (f"joined real x{round(joined[2] / cycle[2])} 640x360@25", *joined[:2], "fast", []),
        (f"joined real x{round(joined[2] / cycle[2])} 640x360@25", *joined[:2], "fast, one task", one_task),
        ("joined real cycle 640x360@25", *cycle[:2], "fast", []),
        ("joined real cycle 640x360@25", *cycle[:2], "content", ["scenes.detector=content"]),
        ("joined real cycle 640x360@25", *cycle[:2], "adaptive", ["scenes.detector=adaptive"]),
    ]
    if not args.skip_transnet:
        plan.append(("joined real cycle 640x360@25", *cycle[:2], "transnetv2 (CPU)", ["scenes.detector=transnetv2"]))
    with contextlib.redirect_stdout(sys.stderr):  # pipeline progress lines → stderr; the table alone → stdout
        for label, path, truth, detector, overrides in plan:
            out = os.path.join(work, "runs", f"{os.path.basename(path)}-{detector.replace(' ', '').replace(',', '-')}")
            repeats = 1 if detector.startswith("transnet") else max(1, args.repeats)
            stage_s, found, decode_s = measure_repeated(path, out, overrides, repeats)
            quality = joined_clips.score(found, truth)
            log(f"{label} {detector}: ingest {sum(stage_s.values()):.2f} s, decode {decode_s:.2f} s, {quality}")
            rows.append(row(label, detector, duration_of(path), 25, stage_s, decode_s, quality))
        out = os.path.join(work, "runs", f"{os.path.basename(syn_path)}-fast")
        rerun_s, _ = measure_rerun(syn_path, out)
        rows.append(row(f"{syn_label}, rerun (no-op)", "fast", duration_of(syn_path), 25, None,
                        ffmpeg_decode_s(syn_path), None, wall=rerun_s))
        one_s, two_s = parallel_decode_ceiling(syn_path, max(1, args.repeats))

    print(bench_common.markdown(COLUMNS, rows))
    print()
    print(f"Median of {max(1, args.repeats)} alternations of ingest and decode per row (TransNetV2: one). "
          "Segment-parallel scenes on 2 CPUs against one task, beside what this machine allows: two single-threaded "
          f"decodes of the synthetic input at once took {two_s:.2f} s against {one_s:.2f} s for one, so two parallel "
          f"tasks can at best take {two_s / (2 * one_s):.2f}x the time of one here (0.50x on two independent cores).")
    print()
    print(bench_common.markdown(
        ["input", "scenes, one task (s)", "scenes, segments on 2 CPUs (s)", "ratio segments/one task",
         "best ratio on this machine (two decodes at once / two one after the other)"],
        _segment_rows(rows, two_s / (2 * one_s))))
    print()
    print(f"{NUM_CPUS}-CPU in-process Ray ({os.cpu_count()} cores visible, load average {load_start:.2f} at start, "
          f"{bench_common.load_average():.2f} at end), {platform.machine()}, Python {platform.python_version()}. "
          f"Ingest wall = sum of one `run_build` per stage in a fresh output folder; Ray start-up and the first "
          f"ingest's one-time imports excluded (an untimed warm-up ingest). "
          f"Decode = `ffmpeg -threads 2 -i X -f null -` ({os.path.basename(ffmpeg.ffmpeg_exe())}), timed right "
          f"after each row.")
    return 0


def _segment_rows(rows: list[list[str]], best: float) -> list[list[str]]:
    """The scenes column of each input's `fast` row against its `fast, one task` row."""
    scenes = COLUMNS.index("scenes (s)")
    by_key = {(r[0], r[1]): float(r[scenes]) for r in rows if r[scenes] != "—"}
    out = []
    for (label, detector), split_s in by_key.items():
        one = by_key.get((label, "fast, one task"))
        if detector == "fast" and one:
            out.append([label, f"{one:.2f}", f"{split_s:.2f}", f"{split_s / one:.2f}", f"{best:.2f}"])
    return out


def synthetic_label(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


if __name__ == "__main__":
    sys.exit(bench_common.run_and_record("ingest", main))
