"""Crash harness: kill the build's driver (and in some runs its whole process group) at random moments in every
stage, rerun to completion, and compare with uninterrupted builds.

    .venv/bin/python benchmarks/crash.py --kills 10          # `make crash N=10`
    .venv/bin/python benchmarks/crash.py --kills 3 --seed 1  # what tests/test_crash.py runs

Inputs: a small synthetic corpus (good videos with known cuts, a duplicate, a broken file) made under `--work`
(default ./bench-out/crash). Every build is `jobs/build_longvid.py` in its own session, with all stages
(ingest, hico, annotate, mix, stats, report; tiny random-weight models) and small parts so there are many commit
points. Two uninterrupted builds come first: the first gives the stage timeline the kill moments are drawn from,
and the two must be byte-identical (a build is reproducible: a file that differs between them is listed and fails
the run; every file is in the byte comparison, with each run's own output path, which report.html names, replaced
by a placeholder). Each kill: a fresh output folder; a stage chosen round-robin (in a
shuffled order); once the build prints that stage's start line, SIGKILL after a random part of the time the stage
took in the clean build (the stage actually running then is read from the build's output); leftover processes of its
session stopped; then the same command rerun to completion.

Compared per kill with the first clean build: file list, bytes, Parquet row counts, duplicates (video ids in the
manifest, members across shards, lines of mixture files), temporaries left in the output (`.tmp-`) and in the job's
temporary base folder. Prints a Markdown table on stdout; exits 1 when any kill breaks one of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import markdown  # noqa: E402

from pipeline import synthetic  # noqa: E402
from pipeline.io import storage  # noqa: E402
from pipeline.stages import STAGES  # noqa: E402
from tests import servers  # noqa: E402

STAGE_ORDER = list(STAGES)
SETTINGS = [
    "probe.part_size=1", "scenes.part_size=1", "shard.max_samples=1",
    "annotate.tiny_demo_model=true", "annotate.max_new_tokens=8", "annotate.batch_size=8",
    "annotate.min_window_s=2", "annotate.max_window_s=6", "sampling.stages.stage2.max_frames=4",
    "annotate.repair_attempts=1", "hico.encoder.preset=tiny", "hico.encoder.allow_random_init=true",
    "hico.stage=stage2", "report.gallery_videos=2", "report.gallery_frames=2", "ray.num_cpus=2",
]
CORPUS = {
    "a.mp4": synthetic.SyntheticVideo([3, 4]),
    "b.mp4": synthetic.SyntheticVideo([2, 3, 2], audio=True),
    "c/d.webm": synthetic.SyntheticVideo([4, 3], codec="libvpx"),
}


def make_corpus(root: Path) -> Path:
    src = root / "sources"
    for name, video in CORPUS.items():
        path = src / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            synthetic.write(video, str(path))
    if not (src / "copy of a.mp4").exists():
        shutil.copyfile(src / "a.mp4", src / "copy of a.mp4")
    if not (src / "broken.mp4").exists():
        synthetic.write_truncated_copy(str(src / "a.mp4"), str(src / "broken.mp4"), 0.4)
    return src


class Build:
    """One run of the job in its own session, its output lines read as they come (to know the running stage)."""

    def __init__(self, src: Path, out: Path, tmp: Path, log: Path):
        cmd = [sys.executable, str(ROOT / "jobs" / "build_longvid.py"), "--source", str(src), "--out", str(out),
               "--stages", "ingest,hico,annotate,mix,stats,report"]
        for s in SETTINGS + [f"storage.tmp_dir={tmp}"]:
            cmd += ["--set", s]
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", RAY_IGNORE_UNHANDLED_ERRORS="1")
        env.pop("RAY_ADDRESS", None)
        self.log = open(log, "w")
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=str(ROOT), start_new_session=True)
        self.stage_starts: list[tuple[str, float]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log.write(line)
            name = line.split("]", 1)[0].lstrip("[")
            if line.startswith("[") and "] start:" in line and name in STAGES:
                self.stage_starts.append((name, time.monotonic() - self.start))

    def running_stage(self) -> str:
        return self.stage_starts[-1][0] if self.stage_starts else "(start-up)"

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        self.log.close()
        return code

    def kill(self, whole_group: bool) -> None:
        if whole_group:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=10)
        self.log.close()
        # what the dead driver leaves running (Ray's own processes, workers) goes before the rerun
        time.sleep(1.0)
        servers.stop_pids(servers.processes_of(session_id=self.proc.pid), timeout=10)


def snapshot(out: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `out`, with the output's own path (which report.html names, and
    which differs between the runs' folders) replaced by a placeholder."""
    files = {}
    own_path = str(out).encode()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(out))] = hashlib.sha256(p.read_bytes().replace(own_path, b"<out>")).hexdigest()
    return files


def row_counts(out: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {str(p.relative_to(out)): pq.ParquetFile(p).metadata.num_rows for p in sorted(out.rglob("*.parquet"))}


def duplicates(out: Path) -> int:
    """Repeated video ids in the manifest, repeated tar members across shards, repeated lines in mixture files."""
    import pyarrow.parquet as pq

    found = 0
    videos = out / "manifest" / "videos.parquet"
    if videos.exists():
        ids = pq.read_table(videos, columns=["video_id"])["video_id"].to_pylist()
        found += len(ids) - len(set(ids))
    members: Counter = Counter()
    for tar in sorted(out.rglob("*.tar")):
        with tarfile.open(tar) as t:
            members.update(m.name for m in t.getmembers())
    found += sum(c - 1 for c in members.values() if c > 1)
    for jsonl in sorted(out.rglob("*.jsonl")):
        lines = Counter(jsonl.read_text().splitlines())
        found += sum(c - 1 for c in lines.values() if c > 1)
    return found


def temporaries(out: Path, tmp: Path) -> list[str]:
    left = [str(p.relative_to(out)) for p in out.rglob("*") if storage.is_temporary(p.name)]
    left += [f"tmp/{p.name}" for p in tmp.iterdir()] if tmp.exists() else []
    return left


def compare(out: Path, tmp: Path, reference: dict, ref_rows: dict, ref_dups: int) -> dict:
    files = snapshot(out)
    return {
        "files": sorted(files) == sorted(reference),
        "missing": sorted(set(reference) - set(files)),
        "extra": sorted(set(files) - set(reference)),
        "bytes": [f for f in files if f in reference and files[f] != reference[f]],
        "rows": row_counts(out) == ref_rows,
        "duplicates": duplicates(out) - ref_dups,
        "temporaries": temporaries(out, tmp),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="bench-out/crash")
    p.add_argument("--timeout", type=float, default=900, help="seconds one build may take")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.work).resolve()
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    src = make_corpus(work)
    tmp = runs / "tmp"

    clean = []
    for name in ("clean-1", "clean-2"):
        t0 = time.monotonic()
        b = Build(src, runs / name, tmp, runs / f"{name}.log")
        code = b.wait(args.timeout)
        if code != 0:
            print(f"[crash] uninterrupted build {name} failed (exit {code}); see {runs / f'{name}.log'}",
                  file=sys.stderr)
            return 1
        clean.append((b, time.monotonic() - t0))
        print(f"[crash] {name}: {clean[-1][1]:.0f} s", file=sys.stderr, flush=True)
    reference = snapshot(runs / "clean-1")
    other = snapshot(runs / "clean-2")
    unstable = sorted(f for f in set(reference) | set(other) if other.get(f) != reference.get(f))
    ref_rows, ref_dups = row_counts(runs / "clean-1"), duplicates(runs / "clean-1")
    timeline = clean[0][0].stage_starts + [("(end)", clean[0][1])]
    windows = [(timeline[i][0], timeline[i][1], timeline[i + 1][1]) for i in range(len(timeline) - 1)]

    rows, failures = [], 0
    order = list(range(len(windows)))
    rng.shuffle(order)
    for k in range(args.kills):
        stage, lo, hi = windows[order[k % len(order)]]
        into = rng.uniform(0, hi - lo)  # this far into the stage, as long as the stage took in the clean build
        whole_group = rng.random() < 0.5
        out = runs / f"kill-{k + 1}"
        victim = Build(src, out, tmp, runs / f"kill-{k + 1}.log")
        while victim.proc.poll() is None and stage not in [s for s, _ in victim.stage_starts]:
            time.sleep(0.05)
        began = time.monotonic()
        while victim.proc.poll() is None and time.monotonic() - began < into:
            time.sleep(0.05)
        moment = time.monotonic() - victim.start
        hit = victim.running_stage() if victim.proc.poll() is None else "(finished)"
        if victim.proc.poll() is None:
            victim.kill(whole_group)
        else:
            victim.wait(10)
        t0 = time.monotonic()
        rerun = Build(src, out, tmp, runs / f"kill-{k + 1}-rerun.log")
        code = rerun.wait(args.timeout)
        took = time.monotonic() - t0
        c = compare(out, tmp, reference, ref_rows, ref_dups)
        ok = code == 0 and c["files"] and not c["bytes"] and c["rows"] and c["duplicates"] == 0 \
            and not c["temporaries"]
        failures += not ok
        rows.append([str(k + 1), hit, f"{moment:.1f}", "group" if whole_group else "driver", str(code),
                     "same" if c["files"] else f"-{len(c['missing'])} +{len(c['extra'])}",
                     "same" if not c["bytes"] else f"{len(c['bytes'])} differ",
                     "same" if c["rows"] else "differ", str(c["duplicates"]), str(len(c["temporaries"])),
                     f"{took:.0f}", "ok" if ok else "FAIL"])
        print(f"[crash] kill {k + 1}: {json.dumps(dict(zip(['kill', 'stage', 'at_s', 'killed', 'rerun_exit'], rows[-1])))}"
              + ("" if ok else f" {json.dumps(c)}"), file=sys.stderr, flush=True)

    print(f"Two uninterrupted builds: {clean[0][1]:.0f} s and {clean[1][1]:.0f} s, {len(reference)} files; "
          f"differing between them: {', '.join(unstable) if unstable else 'none (byte-identical)'}.\n")
    print(markdown(["kill", "stage hit", "at (s)", "killed", "rerun exit", "file list", "bytes", "row counts",
                    "duplicates", "temporaries", "rerun (s)", "result"], rows))
    print(f"\n{args.kills - failures}/{args.kills} kills resumed to the uninterrupted result.")
    return 1 if failures or unstable else 0


if __name__ == "__main__":
    sys.exit(main())
