"""Wall time of the `ingest` stages (crawl, probe, scenes, shard) beside a full ffmpeg decode of the same input.

    .venv/bin/python benchmarks/ingest.py [--work DIR] [--hour-seconds N]

Two inputs, each measured in the same run as its baseline (`ffmpeg -i X -f null -`, a full decode):

1. a synthetic 320x240 @ 25 fps video of `--hour-seconds` seconds (default 3600) made by pipeline.synthetic, with
   scenes of 60-300 s so the cuts are known;
2. about 10 minutes of real footage: the clips of ../shared/media scaled and padded to 640x360 @ 25 fps, then
   concatenated many times with ffmpeg's concat demuxer. The row is skipped, with a message, when that folder is
   missing; nothing else in the project reads it.

Both inputs are made once and cached under the work dir (default ./bench-out, git-ignored); making them is not
timed. Ray is started in-process (2 CPUs) and warmed up before any timing. Every measured build writes into a
fresh output folder, one `run_build` call per stage in order, so each stage has its own time; the synthetic input
then gets a second `ingest` run against the same output to show what a resume of a finished build costs.

The table is printed to stdout in Markdown; the pipeline's own progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bench_common  # noqa: E402

from pipeline import ffmpeg, runner, synthetic  # noqa: E402
from schemas import config as config_schema  # noqa: E402

STAGES = ("crawl", "probe", "scenes", "shard")
NUM_CPUS = 2
MEDIA_DIR = os.path.normpath(os.path.join(ROOT, "..", "shared", "media"))
MEDIA_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
REAL_SIZE = (640, 360)
REAL_FPS = 25
REAL_TARGET_S = 600.0


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


def real_input(work: str, media_dir: str) -> tuple[str, int, float]:
    """(path, repeats, one cycle's seconds) of the concatenated real footage."""
    w, h = REAL_SIZE
    folder = os.path.join(work, "inputs", f"real-{w}x{h}")
    norm = []
    for name in MEDIA_CLIPS:
        out = os.path.join(folder, "clips", os.path.splitext(name)[0] + f"-{w}x{h}.mp4")
        vf = (f"scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,"
              f"setsar=1,fps={REAL_FPS},format=yuv420p")
        _atomic_make(out, lambda tmp, src=os.path.join(media_dir, name): ffmpeg.run(
            ["-i", src, "-vf", vf, "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
             "-g", "50", "-r", str(REAL_FPS), tmp]))
        norm.append(out)
    cycle = sum(duration_of(p) for p in norm)
    repeats = max(1, round(REAL_TARGET_S / cycle))
    path = os.path.join(folder, "source", f"real-x{repeats}.mp4")
    if not os.path.isfile(path):
        log(f"concatenating {repeats} x {cycle:.1f} s of real clips: {path}")
        listing = os.path.join(folder, f"concat-x{repeats}.txt")
        with open(listing, "w", encoding="utf-8") as f:
            for _ in range(repeats):
                for p in norm:
                    f.write(f"file '{os.path.abspath(p)}'\n")
        _atomic_make(path, lambda tmp: ffmpeg.run(["-f", "concat", "-safe", "0", "-i", listing, "-c", "copy", tmp]))
    return path, repeats, cycle


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
    cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", path, "-f", "null", "-"]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True)
    return time.monotonic() - t0


def build_config(source: str, out: str):
    return config_schema.build({"sources": [source], "out": out}, [f"ray.num_cpus={NUM_CPUS}"])


def measure_ingest(source: str, out: str) -> tuple[dict[str, float], dict]:
    """Fresh output folder; one run_build per stage, in order. Returns per-stage seconds and the stage results."""
    shutil.rmtree(out, ignore_errors=True)
    times, results = {}, {}
    for name in STAGES:
        cfg = build_config(source, out)
        t0 = time.monotonic()
        result = runner.run_build(cfg, stage_names=[name], quiet=True)
        times[name] = time.monotonic() - t0
        results[name] = result["stages"][name]
        log(f"{os.path.basename(source)}: {name} {times[name]:.2f} s {results[name]}")
    return times, results


def measure_rerun(source: str, out: str) -> tuple[float, dict]:
    cfg = build_config(source, out)
    t0 = time.monotonic()
    result = runner.run_build(cfg, stage_names=["ingest"], quiet=True)
    return time.monotonic() - t0, result["stages"]


# ---------------------------------------------------------------------------------------------------------------
# Report

COLUMNS = ["input", "duration of video (s)", "ingest wall (s)", "ffmpeg full decode (s)", "ratio ingest/decode",
           *[f"{s} (s)" for s in STAGES], "scenes found / expected"]


def row(label: str, duration: float, stage_s: dict[str, float] | None, decode_s: float | None,
        scenes: str, wall: float | None = None) -> list[str]:
    wall = sum(stage_s.values()) if wall is None and stage_s else wall
    cells = [label, f"{duration:.1f}", f"{wall:.2f}" if wall is not None else "—",
             f"{decode_s:.2f}" if decode_s is not None else "—",
             f"{wall / decode_s:.2f}" if wall is not None and decode_s else "—"]
    cells += [f"{stage_s[s]:.2f}" if stage_s and s in stage_s else "—" for s in STAGES]
    cells.append(scenes)
    return cells


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=os.path.join(os.getcwd(), "bench-out"),
                   help="cache of inputs and output folders (default ./bench-out)")
    p.add_argument("--hour-seconds", type=float, default=3600.0,
                   help="length of the synthetic input in seconds (default 3600; smaller for a quick smoke run)")
    p.add_argument("--media", default=MEDIA_DIR, help=f"folder of the real clips (default {MEDIA_DIR})")
    args = p.parse_args(argv)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)

    # Inputs first (untimed).
    syn_path, syn_video = synthetic_input(work, args.hour_seconds)
    real = None
    skip_note = None
    missing = [c for c in MEDIA_CLIPS if not os.path.isfile(os.path.join(args.media, c))]
    if missing:
        skip_note = (f"real-footage row skipped: {args.media} is missing or lacks {', '.join(missing)} "
                     f"(optional sample clips; pass --media DIR to point elsewhere)")
        log(skip_note)
    else:
        real = real_input(work, args.media)

    log(f"starting Ray in-process with {NUM_CPUS} CPUs (not timed)")
    t0 = time.monotonic()
    bench_common.warm_up_ray(NUM_CPUS, "pipeline.stages")
    log(f"Ray up and warm in {time.monotonic() - t0:.1f} s")

    rows = []
    with contextlib.redirect_stdout(sys.stderr):  # pipeline progress lines → stderr; the table alone → stdout
        # 1. synthetic: ingest, rerun against the same output, then the decode baseline.
        out = os.path.join(work, "runs", "synthetic")
        dur = duration_of(syn_path)
        stage_s, results = measure_ingest(syn_path, out)
        rerun_s, rerun_results = measure_rerun(syn_path, out)
        log(f"rerun (no-op) {rerun_s:.2f} s {rerun_results}")
        decode_s = ffmpeg_decode_s(syn_path)
        log(f"ffmpeg decode {decode_s:.2f} s")
        expected = len(syn_video.scene_durations_s)
        label = f"synthetic {synthetic_label(args.hour_seconds)} 320x240@25"
        rows.append(row(label, dur, stage_s, decode_s, f"{results['scenes']['scenes']} / {expected}"))
        rows.append(row(f"{label}, rerun (no-op)", dur, None, decode_s, "—", wall=rerun_s))

        # 2. real footage.
        if real is not None:
            path, repeats, cycle = real
            out = os.path.join(work, "runs", "real")
            dur = duration_of(path)
            stage_s, results = measure_ingest(path, out)
            decode_s = ffmpeg_decode_s(path)
            log(f"ffmpeg decode {decode_s:.2f} s")
            label = f"real clips x{repeats} {REAL_SIZE[0]}x{REAL_SIZE[1]}@{REAL_FPS}"
            # Every join between clips is a cut; bikes.mp4 holds more of its own.
            rows.append(row(label, dur, stage_s, decode_s, f"{results['scenes']['scenes']} / ≥ {repeats * len(MEDIA_CLIPS)}"))

    print(bench_common.markdown(COLUMNS, rows))
    print()
    print(f"{NUM_CPUS}-CPU in-process Ray ({os.cpu_count()} cores visible), {platform.machine()}, "
          f"Python {platform.python_version()}. Ingest wall = sum of one `run_build` per stage in a fresh output "
          f"folder; Ray start-up excluded. Decode = `ffmpeg -i X -f null -` "
          f"({os.path.basename(ffmpeg.ffmpeg_exe())}, default threads).")
    if skip_note:
        print(f"\nNote: {skip_note}")
    return 0


def synthetic_label(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


if __name__ == "__main__":
    sys.exit(main())
