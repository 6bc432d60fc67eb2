"""Helpers shared by the benchmark scripts (run as `python benchmarks/X.py`, so this folder is on sys.path)."""

from __future__ import annotations

import importlib
import os


def warm_up_ray(num_cpus: int, preload: str) -> None:
    """Start an in-process Ray and its worker processes, each importing `preload`, before anything is timed."""
    import ray

    from pipeline import ray_runtime

    ray_runtime.init(num_cpus=num_cpus)

    @ray.remote(num_cpus=1)
    def noop() -> int:
        importlib.import_module(preload)  # the import the stage tasks pay once per worker
        return os.getpid()

    ray.get([noop.remote() for _ in range(num_cpus * 2)])
