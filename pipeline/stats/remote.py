"""Ray plumbing of the stats checks: tasks whose bulky results stay in the object store. A task returns a small
summary, which the driver fetches, and payloads (a per-row lookup, per-bucket record ids), which the driver only
hands on by reference to later tasks; without Ray everything runs in this process and payloads are plain values."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def ray_running() -> bool:
    import ray

    return ray.is_initialized()


def remote(fn: Callable, returns: int = 1):
    """`fn` as a Ray remote function of one CPU returning `returns` objects (retried like the other stages' tasks)."""
    import ray

    from pipeline.core import tempdirs

    return ray.remote(num_cpus=1, max_retries=2, num_returns=returns)(tempdirs.released(fn))


def window(in_flight: int | None) -> int:
    import ray

    return in_flight or max(2, int(ray.cluster_resources().get("CPU", 1)) * 2)


def imap_with_payload(stage: str, fn: Callable[..., tuple], units: Iterable[Any], shared_args: tuple, unit: str,
                      total: int, in_flight: int | None = None) -> Iterator[tuple[Any, Any]]:
    """(summary, payload) of fn(u, *shared_args) for each unit, in unit order, at most `in_flight` at a time; under
    Ray the payload is an ObjectRef the driver never fetches."""
    from pipeline.core.progress import Progress

    progress = Progress(stage, total, unit)
    if not ray_running():
        for u in units:
            yield fn(u, *shared_args)
            progress.advance(1)
        progress.finish()
        return
    import ray

    task = remote(fn, returns=2)
    shared_refs = tuple(ray.put(a) for a in shared_args)
    pending: deque = deque()
    limit = window(in_flight)
    for u in units:
        pending.append(task.remote(u, *shared_refs))
        while len(pending) >= limit:
            summary_ref, payload_ref = pending.popleft()
            yield ray.get(summary_ref), payload_ref
            progress.advance(1)
    while pending:
        summary_ref, payload_ref = pending.popleft()
        yield ray.get(summary_ref), payload_ref
        progress.advance(1)
    progress.finish()
