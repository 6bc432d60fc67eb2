"""Real local servers for tests: a moto_server S3 endpoint and a threaded HTTP file server, both on 127.0.0.1 only.

Every process started here is stopped by its own pid (terminate, then kill after a timeout); nothing is stopped by
name, so parallel test sessions and other Ray / moto instances on the machine are never touched.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Optional

from pipeline.core.tempdirs import pid_alive

HOST = "127.0.0.1"


def free_port() -> int:
    """A port the OS considers free right now (bound to 127.0.0.1, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop one process we started, by its pid: SIGTERM, wait, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode} before it was ready")
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            resp.read()
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


def _moto_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script), "-H", HOST, "-p", str(port)]
    found = shutil.which("moto_server")
    if found:
        return [found, "-H", HOST, "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]


@contextlib.contextmanager
def moto_server(log_path: Optional[Path] = None) -> Iterator[str]:
    """A real moto S3 server on 127.0.0.1; yields its endpoint URL and stops it (by pid) on exit."""
    with moto_server_process(log_path) as (endpoint, _):
        yield endpoint


@contextlib.contextmanager
def moto_server_process(log_path: Optional[Path] = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Like moto_server, also yielding the process (tests pause it with SIGSTOP or kill it); on exit it is resumed
    if paused and stopped by pid."""
    import signal

    port = free_port()
    endpoint = f"http://{HOST}:{port}"
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(_moto_command(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(endpoint + "/"), 30, f"moto_server on {endpoint}", proc)
        yield endpoint, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        stop_process(proc)
        if log_path:
            log.close()


# ---------------------------------------------------------------------------------------------------------------
# HTTP file server with fault-injection paths


class FileHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory (HTTP/1.0, one request per connection). Fault-injection paths:

    - `/flaky/<n>/<path>`: HTTP 500 for the first n requests of that exact URL, then the file;
    - `/nolength/<path>`: the file without a Content-Length header (body ends when the connection closes);
    - `/truncate/<path>`: declares the full Content-Length but sends only the first half, then closes;
    - `/slow/<seconds>/<path>`: waits that long before answering (client timeouts);
    - `/trickle/<seconds>/<path>`: declares the full length, then sends one byte every that many seconds;
    - `/stall/<path>`: declares the full length, sends the first 1000 bytes, then sends nothing more;
    - `/endless`: no Content-Length and a body of zeros that never ends;
    - `/huge`: declares a Content-Length of 1 TiB (sends zeros as long as the client reads);
    - `/redirect-file`: 302 to file:///etc/passwd;
    - `/reset/<n>/<path>`: resets the connection (RST) for the first n requests of that exact URL, then the file.

    Every request is counted per request path (query included) in `server.hits` and its start time (monotonic) is
    appended to `server.started[path]`, so tests can see retries and which downloads ran side by side.
    """

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def _count(self) -> int:
        with self.server.lock:
            self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
            self.server.started.setdefault(self.path, []).append(time.monotonic())
            return self.server.hits[self.path]

    def _file_bytes(self, rest: str) -> Optional[bytes]:
        path = self.translate_path("/" + rest)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        with open(path, "rb") as f:
            return f.read()

    def _send_head(self, length: Optional[int], status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _drip(self, data: bytes, every_s: float, until_s: float = 300.0) -> None:
        """Send `data` one byte every `every_s` seconds (bounded, and ends when the client goes away)."""
        end = time.monotonic() + until_s
        for i in range(len(data)):
            if time.monotonic() > end or self.server.stopping.is_set():
                return
            try:
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
            except OSError:
                return
            self.server.stopping.wait(every_s)

    def _hostile(self, n: int) -> bool:
        """Serve one of the hostile paths; False when the path is not one of them."""
        if self.path.startswith("/trickle/"):
            _, _, every, rest = self.path.split("/", 3)
            data = self._file_bytes(rest)
            if data is not None:
                self._send_head(len(data))
                self._drip(data, float(every))
            return True
        if self.path.startswith("/stall/"):
            data = self._file_bytes(self.path.split("/", 2)[2])
            if data is not None:
                self._send_head(len(data))
                with contextlib.suppress(OSError):
                    self.wfile.write(data[:1000])
                    self.wfile.flush()
                self.server.stopping.wait(300)
            return True
        if self.path in ("/endless", "/huge"):
            self._send_head(1 << 40 if self.path == "/huge" else None)
            zeros = bytes(1 << 16)
            end = time.monotonic() + 120
            with contextlib.suppress(OSError):
                while time.monotonic() < end and not self.server.stopping.is_set():
                    self.wfile.write(zeros)
            return True
        if self.path == "/redirect-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        if self.path.startswith("/reset/"):
            _, _, fails, rest = self.path.split("/", 3)
            if n <= int(fails):
                import struct

                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return True
            self.path = "/" + rest
        return False

    def do_GET(self):
        n = self._count()
        if self._hostile(n):
            return
        if self.path.startswith("/flaky/"):
            _, _, fails, rest = self.path.split("/", 3)
            if n <= int(fails):
                body = b"temporarily broken\n"
                self.send_response(500)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.path = "/" + rest
        if self.path.startswith("/slow/"):
            _, _, seconds, rest = self.path.split("/", 3)
            time.sleep(float(seconds))
            self.path = "/" + rest
        if self.path.startswith("/truncate/"):
            path = self.translate_path("/" + self.path.split("/", 2)[2])
            if not os.path.isfile(path):
                return self.send_error(404)
            with open(path, "rb") as f:
                data = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path.startswith("/nolength/"):
            path = self.translate_path("/" + self.path.split("/", 2)[2])
            if not os.path.isfile(path):
                return self.send_error(404)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            with open(path, "rb") as f:
                shutil.copyfileobj(f, self.wfile)
            return
        return super().do_GET()


@contextlib.contextmanager
def http_file_server(directory: Path) -> Iterator[tuple[str, http.server.ThreadingHTTPServer]]:
    """A ThreadingHTTPServer on 127.0.0.1 serving `directory`; yields (base URL, server)."""

    def handler(*args, **kwargs):
        return FileHandler(*args, directory=str(directory), **kwargs)

    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    server.daemon_threads = True
    server.hits = {}
    server.started = {}
    server.stopping = threading.Event()
    server.lock = threading.Lock()
    thread = threading.Thread(target=server.serve_forever, name="test-http-server", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}", server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------------------------
# Process trees (for daemons such as a Ray head that outlive the command that started them)


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, session id, command line) of every process visible in /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[3]), cmd)  # state, ppid, pgrp, session
    return table


def processes_of(session_id: Optional[int] = None, cmdline_marker: Optional[str] = None) -> set[int]:
    """Pids in session `session_id` (one we created with start_new_session=True) or whose command line contains
    `cmdline_marker` (a path unique to our run), plus all their descendants. Never includes this process."""
    table = _proc_table()
    found = {pid for pid, (_, sid, cmd) in table.items()
             if (session_id is not None and sid == session_id) or (cmdline_marker and cmdline_marker in cmd)}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    found.discard(os.getpid())
    return found


def stop_pids(pids: set[int], timeout: float = 15.0) -> set[int]:
    """SIGTERM each pid, wait up to `timeout` for all to exit, SIGKILL the rest; returns the pids that survived."""
    import signal

    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    return {p for p in pids if pid_alive(p)}
