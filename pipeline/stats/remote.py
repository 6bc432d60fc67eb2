"""Ray plumbing of the stats checks: tasks whose bulky results stay out of the driver. A task returns a small
summary, which the driver fetches, and payloads (a per-row lookup, per-bucket record ids), which the driver only
hands on by reference to later tasks: an ObjectRef, or a file in the build's work folder (`spool`) for per-video
data that would otherwise stay in the driver, in its memory or its mapped object-store pages. Without Ray
everything runs in this process and payloads are plain values."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.core import ray_runtime
from pipeline.io import storage


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


@dataclass(frozen=True)
class Spooled:
    uri: str


def spool(value, uri: str):
    """In a Ray task: `value` written to `uri` (storage, so any node's task can read it) and a Spooled reference to
    it. Ray keeps a task's return values under 100 KiB in the memory of the process that submitted the task: a group's
    per-video payload returned as such would stay in the driver until the stage ends, ~60 bytes a video; a larger
    value the driver reads itself would be read in place from the object store, whose pages stay in its RSS. Without
    Ray: `value` itself."""
    if not ray_runtime.ray_running():
        return value
    # pickle, as Ray's own object store does: written and read back by this stage's tasks in the build's work folder
    storage.write_bytes(uri, pickle.dumps(value, protocol=5))
    return Spooled(uri)


def get(value):
    """The value behind an ObjectRef (fetched into this process) and, where that is a Spooled file, the file's
    value; or `value` itself."""
    import ray

    if isinstance(value, ray.ObjectRef):
        value = ray.get(value)
    if isinstance(value, Spooled):
        return pickle.loads(storage.read_bytes(value.uri))  # noqa: S301 - written by `spool` in this stage's run
    return value
