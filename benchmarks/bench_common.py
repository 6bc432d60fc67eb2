"""Helpers shared by the benchmark scripts (run as `python benchmarks/X.py`, so this folder is on sys.path)."""

from __future__ import annotations

import importlib
import os


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
