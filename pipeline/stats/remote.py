"""Ray plumbing of the stats checks: tasks whose bulky results stay in the object store. A task returns a small
summary, which the driver fetches, and payloads (a per-row lookup, per-bucket record ids), which the driver only
hands on by reference to later tasks; without Ray everything runs in this process and payloads are plain values."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pipeline.core import ray_runtime


def remote(fn: Callable, returns: int = 1):
    """`fn` as a Ray remote function of one CPU returning `returns` objects (retried like the other stages' tasks)."""
    import ray

    from pipeline.core import tempdirs

    return ray.remote(num_cpus=1, max_retries=2, num_returns=returns)(tempdirs.released(fn))


def imap_with_payload(stage: str, fn: Callable[..., tuple], units: Iterable[Any], shared_args: tuple, unit: str,
                      total: int, in_flight: int | None = None, payloads: int = 1) -> Iterator[tuple[Any, Any]]:
    """(summary, payload) of fn(u, *shared_args) for each unit, in unit order, at most `in_flight` at a time; under
    Ray (ray_runtime.imap_units) the payload is an ObjectRef the driver never fetches. With `payloads` = n > 1, fn
    returns (summary, n payloads) and the payload is a tuple of n (each its own object, fetched apart)."""
    from pipeline.core.progress import Progress

    if ray_runtime.ray_running():
        yield from ray_runtime.imap_units(stage, fn, units, shared_args, unit, total, in_flight=in_flight,
                                          payload=payloads)
        return
    progress = Progress(stage, total, unit)
    for u in units:
        summary, *payload = fn(u, *shared_args)
        yield summary, payload[0] if payloads == 1 else tuple(payload)
        progress.advance(1)
    progress.finish()


def call(fn: Callable, *args, returns: int = 1):
    """fn(*args) as one Ray task whose results stay in the object store (ObjectRefs, one per return), or its value
    in this process without Ray: how the driver hands per-video data from task to task without holding it."""
    if not ray_runtime.ray_running():
        return fn(*args)
    return remote(fn, returns).remote(*args)


def get(value):
    """The value behind an ObjectRef (fetched into this process), or `value` itself."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value
