"""Every temporary file of a build lives under one per-job folder, removed when the job ends and swept by the next
job when a killed run left it behind.

The folder is `<storage.tmp_dir or $TMPDIR>/longvid-job-<digest of the output URI>`: the driver and every Ray worker
derive the same path from the config (`configure`, called by each task), so nothing has to be passed around. The
driver writes an `owner` file (host and pid) into it; a folder whose owner is a dead process on this host is stale.
Code that needs a scratch folder calls `mkdtemp(prefix)` instead of tempfile.mkdtemp. A process that never saw a
config (a direct library call, `longvid report`) gets a private `longvid-job-proc-<pid>` folder, removed at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
import time
from typing import Optional

from schemas.errors import LongVidError

PREFIX = "longvid-job-"
OWNER_FILE = "owner"
UNOWNED_STALE_S = 24 * 3600  # a folder without an owner file (a worker recreated it late) is swept after a day

_current: Optional[str] = None


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


def root() -> str:
    """The job's temporary folder (created on demand)."""
    global _current
    if _current is None:
        _current = os.path.join(tempfile.gettempdir(), f"{PREFIX}proc-{os.getpid()}")
        os.makedirs(_current, exist_ok=True)
        _write_owner(_current)
        atexit.register(shutil.rmtree, _current, True)
    os.makedirs(_current, exist_ok=True)
    return _current


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


def sweep(configured_base: Optional[str]) -> list[str]:
    """Remove the job folders that killed runs on this host left behind; returns their paths."""
    base = base_dir(configured_base)
    removed = []
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            if name.startswith(PREFIX) and os.path.isdir(path) and _stale(path):
                shutil.rmtree(path, ignore_errors=True)
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
