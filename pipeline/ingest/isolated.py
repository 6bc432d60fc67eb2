"""Run per-file media work (probe, decode, scene detection) in a long-lived child process.

A malformed file can hang a demuxer or crash a native decoder (decord, OpenCV) with a signal; in the child
that costs one reject row (`timeout` or `unreadable`) instead of the Ray worker. The child is restarted after a
crash or a time-out and reused otherwise, so the per-file overhead is one JSON round trip. A Ray worker process
runs many parts one after another: `process_worker()` keeps one child for all of them, so its start-up (a Python
process importing PyAV, 0.3-1 s) is paid once per worker process rather than once per part.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from pipeline.core.errors import Rejection
from pipeline.core.project import PROJECT_ROOT, pythonpath_with_project
from schemas import reasons


class IsolatedFailure(Rejection):
    pass


class IsolatedWorker:
    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._env: dict | None = None

    @staticmethod
    def _child_env() -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = pythonpath_with_project(env.get("PYTHONPATH"))
        return env

    def _start(self) -> subprocess.Popen:
        env = self._env = self._child_env()
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.ingest.isolated_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=PROJECT_ROOT,
            process_group=0,  # its own group: a timeout kills the decoders it started (ffmpeg) with it
        )

    def call(self, op: str, timeout_s: float, **kwargs: Any) -> Any:
        """Run `op` in the child; return its result or raise IsolatedFailure / the op's own reject."""
        if self._proc is not None and self._env != self._child_env():
            self.close()  # a later task changed the environment the child was started with
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        proc = self._proc
        proc.stdin.write((json.dumps({"op": op, "kwargs": kwargs}) + "\n").encode())
        proc.stdin.flush()
        line = self._read_line(proc, timeout_s)
        if line is None:
            self.close()
            raise IsolatedFailure(reasons.TIMEOUT, f"{op} did not finish within {timeout_s:g} s")
        if not line:
            code = proc.wait()
            self._proc = None
            what = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            raise IsolatedFailure(reasons.UNREADABLE, f"{op} crashed the media reader ({what})")
        reply = json.loads(line)
        if reply["ok"]:
            return reply["result"]
        raise IsolatedFailure(reply["reason"], reply["message"])

    @staticmethod
    def _read_line(proc: subprocess.Popen, timeout_s: float) -> bytes | None:
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            buf += chunk
            if buf.endswith(b"\n"):
                return buf

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_process_worker: IsolatedWorker | None = None


def process_worker() -> IsolatedWorker:
    """This process's IsolatedWorker, kept for every later task of the process and closed at exit (one task runs at
    a time in a Ray worker process; callers that share it between threads serialise their calls)."""
    global _process_worker
    if _process_worker is None:
        _process_worker = IsolatedWorker()
        atexit.register(_process_worker.close)
    return _process_worker
