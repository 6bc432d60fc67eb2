"""Helpers shared by the benchmark scripts (run as `python benchmarks/X.py`, so this folder is on sys.path)."""

from __future__ import annotations

import datetime
import importlib
import io
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

RESULTS_MD = Path(__file__).resolve().with_name("RESULTS.md")


def proc_status_kib(pid: int | str, keys: tuple[str, ...]) -> dict[str, int]:
    """Fields of /proc/<pid>/status in KiB (VmHWM, VmRSS, RssAnon, RssFile, RssShmem...); 0 for each when the
    process is gone."""
    found = dict.fromkeys(keys, 0)
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in found:
                    found[key] = int(line.split()[1])
    except OSError:
        pass
    return found


def warm_up_ray(num_cpus: int, preload: str) -> None:
    """Start an in-process Ray and its worker processes, each importing `preload`, before anything is timed."""
    import ray

    from pipeline.core import ray_runtime

    ray_runtime.init(num_cpus=num_cpus)

    @ray.remote(num_cpus=1)
    def noop() -> int:
        importlib.import_module(preload)  # the import the stage tasks pay once per worker
        return os.getpid()

    ray.get([noop.remote() for _ in range(num_cpus * 2)])


def markdown(columns: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of string cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def load_average() -> float:
    """The 1-minute load average (NaN where the platform has none): printed beside every result table."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def ensure_scale_build(build: str, fraction: float) -> None:
    """A build fabricated by scale.py at `build` with its manifest, shards and annotations (made when missing)."""
    if os.path.exists(os.path.join(build, "manifest", "videos.parquet")):
        return
    subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale.py"),
                    "--fraction", f"{fraction:g}", "--out", build, "--work", os.path.dirname(build), "--reuse",
                    "--stages", "shard,annotate"], check=True)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def write_results_section(name: str, body: str, *, command: str, load_start: float | None = None,
                          path: Path | str = RESULTS_MD, now: datetime.datetime | None = None) -> Path:
    """Replace the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in `path` with a stamp (date,
    command, cores and load) and `body`; everything outside the markers (hand-written discussion) is kept. A file
    without the section gets it appended under a heading of its own; a file with only one marker, or the section
    twice, raises ValueError rather than guess."""
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"section name {name!r}: use lower-case letters, digits, '-' or '_'")
    path = Path(path)
    start, end = _markers(name)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    load = f"load average {load_start:.2f} at start, {load_average():.2f} at end" if load_start is not None \
        else f"load average {load_average():.2f} at end"
    stamp = (f"_Written by `{command}` on {now:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores visible "
             f"({platform.machine()}), {load}._")
    section = f"{start}\n{stamp}\n\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    counts = (text.count(start), text.count(end))
    if counts == (0, 0):
        text = text.rstrip("\n") + f"\n\n## `{name}` (written by `make bench`)\n\n{section}\n"
    elif counts == (1, 1) and text.index(start) < text.index(end):
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        raise ValueError(f"{path}: markers of section {name!r} are broken ({start} x{counts[0]}, {end} "
                         f"x{counts[1]}); fix them by hand")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


class _Tee(io.TextIOBase):
    """Writes to the real stdout and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, s: str) -> int:
        self.copy.write(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()


def run_and_record(name: str, main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run a benchmark's `main(argv)` and, when it succeeds, write what it printed on stdout into section `name` of
    benchmarks/RESULTS.md (`write_results_section`). Takes two options of its own out of argv: `--results FILE`
    (another file) and `--no-results` (print only)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path: Path | None = RESULTS_MD
    if "--results" in argv:
        i = argv.index("--results")
        if i + 1 >= len(argv):
            raise SystemExit("--results needs a file path")
        path = Path(argv[i + 1])
        del argv[i:i + 2]
    if "--no-results" in argv:
        argv.remove("--no-results")
        path = None
    command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *argv])
    load_start = load_average()
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        rc = main(argv) or 0
    finally:
        sys.stdout = tee.stream
    if rc == 0 and path is not None:
        write_results_section(name, tee.copy.getvalue(), command=command, load_start=load_start, path=path)
        print(f"[bench] wrote section {name!r} of {path}", file=sys.stderr)
    return rc
