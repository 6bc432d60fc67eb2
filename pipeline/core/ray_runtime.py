"""Ray plumbing: connect or start Ray, fan work units out as tasks, and collect results with progress."""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Sequence

from pipeline.core import log, tempdirs
from pipeline.core.progress import Progress
from pipeline.core.project import pythonpath_with_project

LOCAL_HOST = "127.0.0.1"

logger = logging.getLogger(__name__)


def init(address: str | None = None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    level = log.current_level()
    options: dict[str, Any] = {"log_to_driver": True}
    env_vars = {}
    if level != log.DEFAULT_LEVEL:
        # Workers log at the driver's level (log.configure_worker reads it). At the default level the runtime
        # environment stays exactly what it was.
        env_vars[log.LEVEL_ENV] = logging.getLevelName(level)
    if level > logging.INFO:
        options["logging_level"] = logging.WARNING  # Ray's own "Started a local Ray instance" and the like
    if address:
        ray.init(address=address, **({"runtime_env": {"env_vars": env_vars}} if env_vars else {}), **options)
        logger.debug(f"[ray] connected to {address}")
    else:
        _loopback_only()
        env_vars["PYTHONPATH"] = pythonpath_with_project(os.environ.get("PYTHONPATH"))
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOCAL_HOST,
                 runtime_env={"env_vars": env_vars}, **options)
        logger.debug(f"[ray] started a local Ray on {LOCAL_HOST}: {ray.cluster_resources().get('CPU', 0):g} CPUs")
    if level > logging.INFO:
        _quiet_ray_data()


def _quiet_ray_data() -> None:
    """--quiet: no Ray Data progress bars or progress lines on the console (its log file keeps everything)."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)


def _loopback_only() -> None:
    """A local cluster serves this process only: every Ray process listens on 127.0.0.1, never on the machine's
    routable address. Ray replaces a 127.0.0.1 node address by the routable one unless its "no cluster" switch is
    off; the switch is read when Ray is imported, so it is set both in the environment (for Ray's own processes)
    and in the already-imported constant."""
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def map_units(stage: str, fn: Callable[..., dict], units: Sequence[Any], shared_args: tuple, unit: str,
              total_items: int | None = None, items_of: Callable[[Any], int] = lambda u: 1,
              num_cpus: float = 1, inputs_of: Callable[[Any], Sequence] | None = None) -> list[dict]:
    """Run `fn(unit, *shared_args, *inputs_of(unit))` for every unit as a Ray task; results in unit order.

    `inputs_of` gives a unit's ObjectRefs of earlier tasks: Ray starts the unit's task once they are done and passes
    their values (no task sits holding a CPU while it waits). Progress counts `items_of(unit)` items per finished
    unit. A failing task raises here with its error.
    """
    import ray

    if not units:
        return []
    remote = ray.remote(num_cpus=num_cpus, max_retries=2)(tempdirs.released(fn))
    shared_refs = tuple(ray.put(a) for a in shared_args)
    refs = [remote.remote(u, *shared_refs, *(inputs_of(u) if inputs_of else ())) for u in units]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[dict | None] = [None] * len(refs)
    progress = Progress(stage, total_items if total_items is not None else len(units), unit)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=5.0)
        for ref in done:
            i = index[ref]
            results[i] = ray.get(ref)
            logger.debug(f"[{stage}] task {i + 1} of {len(units)} done: {items_of(units[i])} {unit}")
            progress.advance(items_of(units[i]))
    progress.finish()
    return results  # type: ignore[return-value]


def default_in_flight(in_flight: int | None = None) -> int:
    """`in_flight`, or by default twice the cluster's CPUs (at least 2): how many tasks a driver keeps submitted."""
    import ray

    return in_flight or max(2, int(ray.cluster_resources().get("CPU", 1)) * 2)


def ray_running() -> bool:
    import ray

    return ray.is_initialized()


def imap_units(stage: str, fn: Callable[..., Any], units: Iterable[Any], shared_args: tuple, unit: str,
               total_items: int, items_of: Callable[[Any], int] = lambda u: 1, num_cpus: float = 1,
               in_flight: int | None = None, payload: bool | int = False,
               inputs_of: Callable[[Any], Sequence] | None = None, local_without_ray: bool = False) -> Iterator[Any]:
    """`map_units` over units read as they are submitted, at most `in_flight` (default: twice the cluster's CPUs)
    in flight, results yielded in unit order: the driver holds only the units and results in flight.

    With `payload`, `fn` returns (result, payload) as two objects and this yields (result, payload's ObjectRef): the
    driver fetches the result only and hands the payload on by reference to later tasks; with `payload` = n > 1,
    `fn` returns (result, n payloads) and this yields (result, a tuple of their n ObjectRefs). `inputs_of` as in
    `map_units`: a unit's ObjectRefs, passed after the shared arguments once they are ready. With
    `local_without_ray`, when Ray is not running (a command outside a job), `fn` runs on each unit in this process
    instead. When a task fails, or the caller closes the iterator before its end (`contextlib.closing` around a loop
    that may raise), the tasks still in flight are cancelled and waited for, so none writes after the caller has
    cleaned up."""
    import ray

    if local_without_ray and not ray_running():
        progress = Progress(stage, total_items, unit)
        for u in units:
            yield fn(u, *shared_args)
            progress.advance(items_of(u))
        progress.finish()
        return
    remote = ray.remote(num_cpus=num_cpus, max_retries=2, num_returns=1 + int(payload))(tempdirs.released(fn))
    shared_refs = tuple(a if isinstance(a, ray.ObjectRef) else ray.put(a) for a in shared_args)  # a ref passes on
    window = default_in_flight(in_flight)
    progress = Progress(stage, total_items, unit)
    pending: deque = deque()

    def oldest() -> Any:
        ref, items = pending.popleft()
        result = ((ray.get(ref[0]), ref[1] if payload == 1 else tuple(ref[1:])) if payload else ray.get(ref))
        progress.advance(items)
        return result

    try:
        for u in units:
            pending.append((remote.remote(u, *shared_refs, *(inputs_of(u) if inputs_of else ())), items_of(u)))
            if len(pending) >= window:
                yield oldest()
        while pending:
            yield oldest()
    finally:  # a task failed or the caller stopped early (close()): no task of this call outlives it
        if pending:
            _cancel_and_wait([ref[0] if isinstance(ref, list) else ref for ref, _ in pending])
    progress.finish()


CANCEL_WAIT_S = 60.0  # at most this long for cancelled tasks to stop


def _cancel_and_wait(refs: list) -> None:
    """Cancel the tasks behind `refs` and wait until they have stopped (finished, failed or cancelled), so that none
    writes after its caller has cleaned up or reported the failure."""
    import ray

    if not ray.is_initialized():  # closed after Ray shut down (at exit): its tasks went with it
        return
    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception:  # noqa: BLE001 - already finished, or its owner is going away: nothing to stop
            pass
    ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S, fetch_local=False)


def flatten(results: Iterable[dict], key: str) -> list:
    out = []
    for r in results:
        out.extend(r.get(key, []))
    return out
