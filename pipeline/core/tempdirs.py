"""Every temporary file of a build lives under one per-job folder, removed when the job ends and swept by the next
job when a killed run left it behind.

The folder is `<storage.tmp_dir or $TMPDIR>/longvid-job-<digest of the output URI>`: the driver and every Ray worker
derive the same path from the config (`configure`, called by each task), so nothing has to be passed around. The
driver writes an `owner` file (host and pid) into it; a folder whose owner is a dead process on this host is stale.
Code that needs a scratch folder calls `mkdtemp(prefix)` instead of tempfile.mkdtemp. A process that never saw a
config (a direct library call, `longvid report`) gets a private `longvid-job-proc-<pid>` folder, removed at exit.

A Ray worker process (on any node) writes into its own `worker-<pid>` subfolder of the job folder, with an owner
file of its own: at its first use on a node it sweeps what dead workers and dead jobs left there, and at the end of
every task or actor call (`release`, wired in by `released` and the stages' actors) it removes its subfolder, and
the job folder when nothing else is in it: on a node other than the driver's nobody else would.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import socket
import sys
import tempfile
import time
from typing import Callable, Optional

from schemas.errors import LongVidError

PREFIX = "longvid-job-"
OWNER_FILE = "owner"
WORKER_PREFIX = "worker-"  # a Ray worker's subfolder of a job folder: worker-<pid>
UNOWNED_STALE_S = 24 * 3600  # a folder without an owner file (a worker recreated it late) is swept after a day

_current: Optional[str] = None
_swept_bases: set[str] = set()  # base folders this worker process has swept already


class JobFolderBusy(LongVidError, RuntimeError):
    """Another live process on this host owns the job folder (two builds writing the same output)."""


def base_dir(configured: Optional[str]) -> str:
    return os.path.abspath(os.path.expanduser(configured)) if configured else tempfile.gettempdir()


def job_dir(out: str, configured_base: Optional[str]) -> str:
    digest = hashlib.sha256(out.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(base_dir(configured_base), PREFIX + digest)


def configure(out: str, configured_base: Optional[str]) -> None:
    """Point this process's temporaries at the job's folder (each Ray task calls this through configure_worker)."""
    global _current
    _current = job_dir(out, configured_base)


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker (a task or an actor), not a driver."""
    if "ray" not in sys.modules:
        return False
    try:
        from ray._private import worker
    except ImportError:
        return False
    return getattr(worker.global_worker, "mode", None) == worker.WORKER_MODE


def root() -> str:
    """The folder this process puts its temporaries in (created on demand): the job's folder in the driver, this
    worker's subfolder of it in a Ray worker."""
    global _current
    if _current is None:
        _current = os.path.join(tempfile.gettempdir(), f"{PREFIX}proc-{os.getpid()}")
        os.makedirs(_current, exist_ok=True)
        _write_owner(_current)
        atexit.register(shutil.rmtree, _current, True)
    if in_ray_worker():
        return _worker_root(_current)
    os.makedirs(_current, exist_ok=True)
    return _current


def _worker_root(job: str) -> str:
    base = os.path.dirname(job)
    if base not in _swept_bases:  # first use on this node: what dead workers and dead jobs left here
        _swept_bases.add(base)
        sweep(base)
    folder = os.path.join(job, f"{WORKER_PREFIX}{os.getpid()}")
    for _ in range(3):  # another worker's release may remove the (then empty) job folder in between
        try:
            os.makedirs(folder, exist_ok=True)
            break
        except FileNotFoundError:
            continue
    if not os.path.exists(os.path.join(folder, OWNER_FILE)):
        _write_owner(folder)
    return folder


def release() -> None:
    """End of a task or actor call in a Ray worker: remove this worker's subfolder when its temporaries are gone
    (their users remove them), then the job folder when nothing else is in it (no driver owns it on this node)."""
    if _current is None or not in_ray_worker():
        return
    folder = os.path.join(_current, f"{WORKER_PREFIX}{os.getpid()}")
    with contextlib.suppress(OSError):
        if os.listdir(folder) == [OWNER_FILE]:
            os.unlink(os.path.join(folder, OWNER_FILE))
            os.rmdir(folder)
    _remove_if_empty(_current)


def released(fn: Callable) -> Callable:
    """`fn` followed by `release()`: the form in which task functions are handed to Ray."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            release()
    return run


def _remove_if_empty(folder: str) -> None:
    """Remove a job folder that holds nothing, or only the owner file of a process that is gone (a private
    `proc-<pid>` folder of a worker)."""
    with contextlib.suppress(OSError):
        names = os.listdir(folder)
        if names == [OWNER_FILE] and os.path.basename(folder).startswith(f"{PREFIX}proc-"):
            os.unlink(os.path.join(folder, OWNER_FILE))
            names = []
        if not names:
            os.rmdir(folder)


def mkdtemp(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir=root())


def mkstemp(prefix: str, suffix: str = "") -> tuple[int, str]:
    return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=root())


def _write_owner(folder: str) -> None:
    with open(os.path.join(folder, OWNER_FILE), "w") as f:
        f.write(f"{socket.gethostname()} {os.getpid()}\n")


def _owner(folder: str) -> Optional[tuple[str, int]]:
    try:
        with open(os.path.join(folder, OWNER_FILE)) as f:
            host, pid = f.read().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` is running here (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie has exited
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    return True


def _stale(folder: str) -> bool:
    owner = _owner(folder)
    if owner is None:
        with contextlib.suppress(OSError):
            return time.time() - os.path.getmtime(folder) > UNOWNED_STALE_S
        return False
    host, pid = owner
    return host == socket.gethostname() and pid != os.getpid() and not pid_alive(pid)


def _sweep_workers(job: str) -> bool:
    """Remove the subfolders of dead workers on this host inside a job folder; whether a live one remains."""
    live = False
    with contextlib.suppress(OSError):
        for name in os.listdir(job):
            path = os.path.join(job, name)
            if name.startswith(WORKER_PREFIX) and os.path.isdir(path):
                if _owner(path) is not None and _stale(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    live = True
    return live


def sweep(configured_base: Optional[str]) -> list[str]:
    """Remove what killed runs on this host left behind: job folders of dead drivers, subfolders of dead workers,
    and job folders that end up empty (a worker node's, once its workers are gone); returns the removed folders."""
    base = base_dir(configured_base)
    removed = []
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            if not name.startswith(PREFIX) or not os.path.isdir(path):
                continue
            if _owner(path) is not None:
                if _stale(path):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
                else:
                    _sweep_workers(path)
                continue
            live = _sweep_workers(path)  # no owner: a job folder on a node the driver is not on
            _remove_if_empty(path)
            if os.path.isdir(path) and not live and _stale(path):
                shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(path)
    return removed


def start_job(out: str, configured_base: Optional[str]) -> str:
    """Driver side: sweep stale folders, then create and own this job's folder."""
    sweep(configured_base)
    folder = job_dir(out, configured_base)
    owner = _owner(folder)
    if owner and owner[0] == socket.gethostname() and owner[1] != os.getpid() and pid_alive(owner[1]):
        raise JobFolderBusy(f"another build (pid {owner[1]}) is writing to this output right now")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    _write_owner(folder)
    configure(out, configured_base)
    return folder


def end_job(folder: str) -> None:
    global _current
    shutil.rmtree(folder, ignore_errors=True)
    if _current == folder:
        _current = None
