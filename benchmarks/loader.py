"""Throughput of the streaming loader (pipeline.loader.dataset.LongVidDataset) beside raw decord decoding of the same
frames from the same files, measured in the same run.

    .venv/bin/python benchmarks/loader.py [--quick] [--work DIR] [--reps N]

Inputs, made once and cached under `--work` (default ./bench-out, git-ignored; making them is not timed):
synthetic videos from pipeline.synthetic (640x360 @ 25 fps, 60-240 s, a scene cut every 30 s; `--quick`: three
320x240 videos of 30-60 s), built into WebDataset shards by `jobs/build_longvid.py --stages crawl,probe,shard`
(two videos per shard) in a separate process, and a second time with `--set shard.payload=frames`.

Every pass yields each video once with the frames of its stage3 plan (`dynamic_fps1`, 64-512 frames: one per
second here), uint8 [T, H, W, 3]:

- baseline, serial: `decord.VideoReader(source file, num_threads=1).get_batch(plan indices).asnumpy()` per video
  in the main process;
- baseline, 2 processes: the same in a fork-started multiprocessing pool of 2, created inside the timed pass
  (the DataLoader starts its workers inside the pass too); only the frame count travels back;
- loader: `DataLoader(LongVidDataset(out, "stage3", shuffle_shards=False, shuffle_buffer=0), batch_size=None,
  num_workers=W)` for W = 0 (in-process), 1 and 2; the frames reach the main process (as tensors in shared
  memory for W > 0). The loader reads each video's bytes out of the shard tar and decodes them in memory.
  An informational row runs W = 1 with the frames replaced by an empty tensor inside the worker: the difference
  to the full W = 1 row is what handing the frames to the main process costs (the DataLoader copies every
  tensor into shared memory; the baselines hand nothing over).
- where the time goes (informational rows, W = 2 against the pool of 2): the pool decoding each file's bytes from
  memory (`decord.VideoReader(io.BytesIO(...))`, as the loader does), and the W = 2 loader with the frames
  dropped in the worker; the table is followed by the differences step by step: decoding from memory, reading
  the shard + dataset + DataLoader, handing the frames to the main process.
- loader over shards built with `shard.payload=frames` (the same videos; each sample also carries its stage3
  frames as JPEGs, quality 90), `frames_source="jpeg"`, W = 0 and 2 (informational rows): the frames come from the
  JPEGs, the video is neither read nor decoded.

Passes are interleaved (every configuration once per repeat) and the median wall time is reported. Ratios compare
frames/s with the baseline of the same parallelism (W = 0 and 1 against serial, W = 2 against the pool); target
>= 0.9x. CPU time (this process plus its finished children, per pass) is reported beside it, with the baseline's
CPU seconds over the loader's as a second ratio that other load on the machine disturbs less. Peak RSS:
`ru_maxrss` of each worker process (loader workers and pool processes), reported with the main process's RSS when
the pass starts: a forked worker's RSS includes the pages it shares with the main process.

The Markdown table goes to stdout; `[bench]` notes and the build's output go to stderr.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import bench_common
import decord
import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline import synthetic
from pipeline.loader import LongVidDataset
from schemas import layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STAGE = "stage3"
SCENE_S = 30.0


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Inputs (cached, not timed)


def video_set(quick: bool) -> tuple[list[float], int, int]:
    if quick:
        return [30.0, 45.0, 60.0], 320, 240
    return [60.0, 90.0, 120.0, 150.0, 180.0, 240.0], 640, 360


def build_shards(src: str, out: str, *settings: str) -> None:
    if not os.path.isfile(os.path.join(out, layout.SHARD_INDEX)):
        log(f"building shards into {out} (crawl, probe, shard; not timed)")
        cmd = [sys.executable, os.path.join(ROOT, "jobs", "build_longvid.py"), "--source", src, "--out", out,
               "--stages", "crawl,probe,shard", "--set", "shard.max_samples=2", "--set", "ray.num_cpus=2"]
        for setting in settings:
            cmd += ["--set", setting]
        subprocess.run(cmd, check=True, stdout=sys.stderr, stderr=sys.stderr)


def make_inputs(work: str, quick: bool) -> tuple[str, str, str]:
    """(source folder, shards of the videos, shards that also carry the stage3 frames as JPEGs)."""
    durations, width, height = video_set(quick)
    name = f"loader-{len(durations)}x{int(min(durations))}-{int(max(durations))}s-{width}x{height}"
    src = os.path.join(work, "inputs", name)
    os.makedirs(src, exist_ok=True)
    for i, d in enumerate(durations):
        path = os.path.join(src, f"video-{i:02d}-{int(d)}s.mp4")
        if not os.path.isfile(path):
            scenes = [SCENE_S] * int(d // SCENE_S) + ([d % SCENE_S] if d % SCENE_S else [])
            tmp = path + ".tmp.mp4"
            synthetic.write(synthetic.SyntheticVideo(scenes, width=width, height=height), tmp)
            os.replace(tmp, path)
            log(f"made {path}")
    out = os.path.join(work, "runs", name)
    build_shards(src, out)
    out_jpeg = os.path.join(work, "runs", name + "-jpeg")
    build_shards(src, out_jpeg, "shard.payload=frames", f"shard.frames_stage={STAGE}")
    return src, out, out_jpeg


def plans(out: str) -> list[tuple[str, list[int]]]:
    """(source file, stage3 frame indices) per video, in shard order."""
    rows = pq.read_table(os.path.join(out, layout.MANIFEST_VIDEOS)).to_pylist()
    rows.sort(key=lambda v: v["video_id"])
    return [(v["source_uri"], next(p["frame_indices"] for p in v["sampling"] if p["stage"] == STAGE)) for v in rows]


# ---------------------------------------------------------------------------------------------------------------
# Measured passes: each returns (samples, frames, {process label: peak RSS bytes})


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (DataLoader workers and pool processes are joined
    when their pass ends)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def current_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def decode_one(job: tuple[str, list[int]]) -> tuple[int, int, int]:
    path, idx = job
    frames = decord.VideoReader(path, num_threads=1).get_batch(idx).asnumpy()
    return frames.shape[0], os.getpid(), max_rss_bytes()


def decode_one_in_memory(job: tuple[str, list[int]]) -> tuple[int, int, int]:
    """As decode_one, from the file's bytes in memory (as the loader decodes a video read out of a shard)."""
    path, idx = job
    with open(path, "rb") as f:
        data = f.read()
    frames = decord.VideoReader(io.BytesIO(data), num_threads=1).get_batch(idx).asnumpy()
    return frames.shape[0], os.getpid(), max_rss_bytes()


def raw_serial(jobs) -> tuple[int, int, dict]:
    frames = 0
    for path, idx in jobs:
        frames += decord.VideoReader(path, num_threads=1).get_batch(idx).asnumpy().shape[0]
    return len(jobs), frames, {}


def raw_pool(jobs, processes: int, decode=decode_one) -> tuple[int, int, dict]:
    frames, peaks = 0, {}
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for n, pid, rss in pool.imap(decode, jobs, chunksize=1):
            frames += n
            peaks[pid] = max(peaks.get(pid, 0), rss)
    return len(jobs), frames, peaks


class WithPeakRss(torch.utils.data.IterableDataset):
    """The loader, each item tagged with its worker's peak RSS so far (benchmark only)."""

    def __init__(self, ds, drop_frames: bool = False):
        self.ds = ds
        self.drop_frames = drop_frames

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        for item in self.ds:
            item["_worker"] = info.id if info else -1
            item["_rss"] = max_rss_bytes()
            if self.drop_frames:  # the informational row: what handing frames to the main process costs
                item["frames"] = torch.empty(item["frames"].shape[:1] + (0,))
            yield item


def loader_pass(ds, workers: int, drop_frames: bool = False) -> tuple[int, int, dict]:
    samples = frames = 0
    peaks: dict = {}
    wrapped = WithPeakRss(ds, drop_frames)
    for item in torch.utils.data.DataLoader(wrapped, batch_size=None, num_workers=workers):
        samples += 1
        frames += int(item["frames"].shape[0])
        w = int(item["_worker"])
        peaks[w] = max(peaks.get(w, 0), int(item["_rss"]))
    return samples, frames, peaks


# ---------------------------------------------------------------------------------------------------------------


# Shards written with shard.payload=frames: the loader decodes the carried stage3 JPEGs (quality 90) instead of
# the video. Informational: another input than the baseline's, so no target applies.
JPEG_ROWS = {w: f"loader, num_workers={w}, JPEG frames payload (info)" for w in (0, 2)}

# Where the num_workers=2 loader's time goes beside the pool of 2, step by step (informational rows): decoding
# from bytes in memory instead of a file, then the loader without handing frames over (reading the shard, the
# dataset's bookkeeping, the DataLoader), then the full loader (the frames travel to the main process).
GAP_ROWS = ("raw decord from bytes in memory, pool of 2 (info)",
            "loader, num_workers=2, frames dropped in the worker (info)")

COLUMNS = ["reader", "processes decoding", "videos", "frames", "wall (s, median)", "samples/s", "frames/s",
           "baseline frames/s", "ratio (wall)", "≥ 0.9×", "CPU s (median)", "ratio (CPU time)",
           "peak RSS per decoding process (MiB)", "main process RSS at start (MiB)"]


def mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="three short 320x240 videos, 2 repeats")
    p.add_argument("--work", default=os.path.join(os.getcwd(), "bench-out"),
                   help="cache of inputs and shards (default ./bench-out)")
    p.add_argument("--reps", type=int, default=None, help="interleaved repeats per configuration (default 5; 2 quick)")
    args = p.parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)
    work = os.path.abspath(args.work)
    load_at_start = bench_common.load_average()
    src, out, out_jpeg = make_inputs(work, args.quick)
    jobs = plans(out)
    ds = LongVidDataset(out, STAGE, shuffle_shards=False, shuffle_buffer=0)
    ds_jpeg = LongVidDataset(out_jpeg, STAGE, shuffle_shards=False, shuffle_buffer=0, frames_source="jpeg")
    torch.set_num_threads(1)

    configs = {
        "raw decord, serial": lambda: raw_serial(jobs),
        "raw decord, pool of 2": lambda: raw_pool(jobs, 2),
        "loader, num_workers=0": lambda: loader_pass(ds, 0),
        "loader, num_workers=1": lambda: loader_pass(ds, 1),
        "loader, num_workers=2": lambda: loader_pass(ds, 2),
        "loader, num_workers=1, frames dropped in the worker (info)": lambda: loader_pass(ds, 1, drop_frames=True),
        GAP_ROWS[0]: lambda: raw_pool(jobs, 2, decode_one_in_memory),
        GAP_ROWS[1]: lambda: loader_pass(ds, 2, drop_frames=True),
        JPEG_ROWS[0]: lambda: loader_pass(ds_jpeg, 0),
        JPEG_ROWS[2]: lambda: loader_pass(ds_jpeg, 2),
    }
    processes = {"raw decord, serial": 1, "raw decord, pool of 2": 2, "loader, num_workers=0": 1,
                 "loader, num_workers=1": 1, "loader, num_workers=2": 2,
                 "loader, num_workers=1, frames dropped in the worker (info)": 1, GAP_ROWS[0]: 2, GAP_ROWS[1]: 2,
                 JPEG_ROWS[0]: 1, JPEG_ROWS[2]: 2}
    baseline_of = {"loader, num_workers=0": "raw decord, serial", "loader, num_workers=1": "raw decord, serial",
                   "loader, num_workers=2": "raw decord, pool of 2",
                   "loader, num_workers=1, frames dropped in the worker (info)": "raw decord, serial",
                   GAP_ROWS[0]: "raw decord, pool of 2", GAP_ROWS[1]: "raw decord, pool of 2",
                   JPEG_ROWS[0]: "raw decord, serial", JPEG_ROWS[2]: "raw decord, pool of 2"}
    log("warm-up pass of every configuration (page cache, imports)")
    for fn in configs.values():
        fn()
    walls = {k: [] for k in configs}
    cpus = {k: [] for k in configs}
    result = {}
    main_rss = {}
    for rep in range(reps):
        for name, fn in configs.items():
            main_rss[name] = max(main_rss.get(name, 0), current_rss_bytes())
            t0, c0 = time.perf_counter(), cpu_seconds()
            samples, frames, peaks = fn()
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(cpu_seconds() - c0)
            prev = result.get(name, (0, 0, {}))[2]
            result[name] = (samples, frames, {k: max(v, prev.get(k, 0)) for k, v in peaks.items()} or prev)
            log(f"rep {rep + 1}/{reps} {name}: {walls[name][-1]:.2f} s")
    if any(r[0] != len(jobs) or r[1] != sum(len(j[1]) for j in jobs) for r in result.values()):
        raise SystemExit(f"a configuration yielded another sample or frame count: {result}")

    rows = []
    for name in configs:
        samples, frames, peaks = result[name]
        wall = statistics.median(walls[name])
        fps = frames / wall
        base = baseline_of.get(name)
        cpu = statistics.median(cpus[name])
        if base:
            base_fps = result[base][1] / statistics.median(walls[base])
            ratio = fps / base_fps
            cpu_ratio = statistics.median(cpus[base]) / cpu
            verdict = "—" if name.endswith("(info)") else "yes" if ratio >= 0.9 else "**no**"
            cells = [f"{base_fps:.1f}", f"{ratio:.2f}×", verdict, f"{cpu:.2f}", f"{cpu_ratio:.2f}×"]
        else:
            cells = ["—", "—", "—", f"{cpu:.2f}", "—"]
        if peaks:
            rss = " / ".join(mib(v) for _, v in sorted(peaks.items()))
        else:
            rss = f"{mib(max_rss_bytes())} (main process)"
        rows.append([name, str(processes[name]), str(samples), str(frames), f"{wall:.2f}", f"{samples / wall:.2f}",
                     f"{fps:.1f}"] + cells + [rss, mib(main_rss[name])])

    durations, width, height = video_set(args.quick)
    print(f"Environment: {os.cpu_count()} cores visible, {platform.machine()}, Python {platform.python_version()}, "
          f"torch {torch.__version__}, decord {decord.__version__}, numpy {np.__version__}; load average "
          f"{load_at_start:.2f} at start.")
    print()
    print(f"#### Loader vs raw decord: {len(jobs)} synthetic videos {width}x{height}@25 of "
          f"{', '.join(f'{d:g}' for d in durations)} s, {STAGE} plans ({sum(len(j[1]) for j in jobs)} frames), "
          f"median of {reps} interleaved passes")
    print(bench_common.markdown(COLUMNS, rows))
    print()
    steps = [("raw decord, pool of 2", "decoding from bytes in memory instead of the file"),
             (GAP_ROWS[0], "reading the shard, the dataset and the DataLoader (frames dropped in the worker)"),
             (GAP_ROWS[1], "handing the frames to the main process"), ("loader, num_workers=2", None)]
    print()
    print("Where the num_workers=2 loader's time goes beside the pool of 2 (median wall, CPU s):")
    for (a, what), (b, _) in zip(steps, steps[1:]):
        print(f"- {what}: {statistics.median(walls[b]) - statistics.median(walls[a]):+.2f} s wall, "
              f"{statistics.median(cpus[b]) - statistics.median(cpus[a]):+.2f} CPU s")
    print()
    print(f"Load average {bench_common.load_average():.2f} at the end. Other work on the machine slows single passes by up to "
          f"2x; compare the ratios, and the CPU-time ratio when the wall-time ones disagree.")
    return 0


if __name__ == "__main__":
    sys.exit(bench_common.run_and_record("loader", main))
