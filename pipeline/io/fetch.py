"""Materialise an input URI as a local file, hashing the bytes (sha256) while they are read.

Local files are hashed in place; S3 objects and http(s) URLs are streamed into a temporary file (under the job's
temporary folder) that is deleted when the context exits. Failures that belong to the input raise FetchError with a
reject reason code; an S3 endpoint that does not answer raises storage.StorageUnavailable (the job stops).

Every download is bounded: a total deadline over all attempts, a minimum average throughput once a window has
passed, a byte limit checked against the declared length before the body is read and again while streaming. Only
what can succeed on a second try is retried (5xx, 408/429, timeouts, connection resets, truncated bodies), with
exponential backoff and jitter; a redirect to a non-http(s) scheme, a 4xx or a limit fails at once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from pipeline.core import tempdirs
from pipeline.core.errors import Rejection
from pipeline.io import storage
from schemas import reasons

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PROGRESS_EVERY_S = 30.0  # a download still running after this prints a progress line, and again every this often


class FetchError(Rejection):
    pass


@dataclass(frozen=True)
class HttpPolicy:
    timeout_s: float = 60.0  # connect and per-read timeout
    retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    jitter: float = 0.5
    deadline_s: float = 3600.0  # one download, all attempts
    min_bytes_per_s: int = 0
    throughput_window_s: float = 30.0

    def backoff(self, retry: int) -> float:
        """Wait before retry number `retry` (1-based): exponential, capped, shortened by a random jitter."""
        base = min(self.backoff_max_s, self.backoff_s * (2 ** (retry - 1)))
        return base * (1 - self.jitter * random.random())


@dataclass
class Fetched:
    path: str
    sha256: str
    bytes: int


class _Budget:
    """The deadline and throughput floor of one download (shared by its attempts)."""

    def __init__(self, what: str, policy: HttpPolicy):
        self.what, self.policy = what, policy
        self.start = time.monotonic()
        self._next_progress = self.start + PROGRESS_EVERY_S

    def left(self) -> float:
        return self.policy.deadline_s - (time.monotonic() - self.start)

    def check(self, attempt_start: float, n: int, declared: Optional[int]) -> None:
        now = time.monotonic()
        if now - self.start > self.policy.deadline_s:
            raise FetchError(reasons.DOWNLOAD_FAILED, f"{self.what}: deadline of {self.policy.deadline_s:g} s "
                                                      f"passed after {n} bytes")
        elapsed = now - attempt_start
        floor = self.policy.min_bytes_per_s
        if floor and elapsed >= self.policy.throughput_window_s and n / elapsed < floor:
            raise FetchError(reasons.DOWNLOAD_FAILED, f"{self.what}: {n / elapsed:.0f} bytes/s over {elapsed:.0f} s, "
                                                      f"below the minimum of {floor} bytes/s")
        if now >= self._next_progress:
            self._next_progress = now + PROGRESS_EVERY_S
            total = f" of {declared}" if declared else ""
            log.warning(f"[fetch] {self.what}: {n}{total} bytes after {now - self.start:.0f} s")


def _copy_hashing(read, dst, max_bytes: int, what: str, check=None) -> tuple[str, int]:
    """Copy from `read(n)` (returns whatever is available, b'' at the end) to `dst`, hashing; `check(n)` after each
    chunk raises to abort."""
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        n += len(chunk)
        if n > max_bytes:
            raise FetchError(reasons.TOO_LARGE, f"{what} is larger than the limit of {max_bytes} bytes")
        h.update(chunk)
        if dst is not None:
            dst.write(chunk)
        if check is not None:
            check(n)
    return h.hexdigest(), n


def sha256_of_file(path: str) -> str:
    with open(path, "rb") as f:
        return _copy_hashing(f.read, None, 1 << 62, path)[0]


LOCAL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _local_disk_failure(e: BaseException) -> bool:
    """Disk full or read-only temporary folder: the machine's problem, not the input's (the job stops)."""
    return isinstance(e, OSError) and not isinstance(e, ConnectionError) and e.errno in LOCAL_DISK_ERRNOS


def _retryable(e: BaseException) -> bool:
    import requests
    from urllib3.exceptions import ProtocolError, ReadTimeoutError

    if isinstance(e, (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL,
                      requests.exceptions.MissingSchema, requests.exceptions.TooManyRedirects)):
        return False
    return isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                          requests.exceptions.ChunkedEncodingError, ProtocolError, ReadTimeoutError,
                          ConnectionError, TimeoutError))


def _download_http(url: str, dst_path: str, max_bytes: int, policy: HttpPolicy) -> tuple[str, int]:
    import requests

    budget = _Budget(url, policy)
    last_error = "no attempt made"
    attempts = 0
    out_of_time = False
    for attempt in range(policy.retries + 1):
        if attempt:
            wait = policy.backoff(attempt)
            if wait >= budget.left():
                out_of_time = True
                break
            time.sleep(wait)
        attempts += 1
        timeout = max(0.1, min(policy.timeout_s, budget.left()))
        try:
            with requests.get(url, stream=True, timeout=timeout) as resp:
                if resp.url and not storage.is_http(resp.url):  # requests refuses such redirects; be explicit
                    raise FetchError(reasons.DOWNLOAD_FAILED, f"{url} redirects to {resp.url}: not http(s)")
                if resp.status_code in (408, 429) or resp.status_code >= 500:
                    last_error = f"HTTP {resp.status_code}"
                    continue
                if resp.status_code >= 400:
                    raise FetchError(reasons.DOWNLOAD_FAILED, f"HTTP {resp.status_code} for {url}")
                declared = resp.headers.get("Content-Length")
                declared = int(declared) if declared and declared.isdigit() else None
                if declared is not None and declared > max_bytes:
                    raise FetchError(reasons.TOO_LARGE, f"{url} declares {declared} bytes, above the limit of {max_bytes}")
                resp.raw.decode_content = True
                started = time.monotonic()
                with open(dst_path, "wb") as dst:
                    return _copy_hashing(resp.raw.read1, dst, max_bytes, url,
                                         lambda n: budget.check(started, n, declared))
        except FetchError:
            raise
        except Exception as e:
            if _local_disk_failure(e):
                raise
            if not _retryable(e):
                raise FetchError(reasons.DOWNLOAD_FAILED, f"{url}: {type(e).__name__}: {e}")
            last_error = f"{type(e).__name__}: {e}"
        if budget.left() <= 0:
            out_of_time = True
            break
    note = f"; the deadline of {policy.deadline_s:g} s allows no further attempt" if out_of_time else ""
    raise FetchError(reasons.DOWNLOAD_FAILED, f"{url}: {last_error} after {attempts} attempts{note}")


def _download_s3(uri: str, dst_path: str, max_bytes: int, policy: HttpPolicy) -> tuple[str, int]:
    from botocore.exceptions import ClientError

    budget = _Budget(uri, policy)
    try:
        with storage.open_read(uri) as src:
            declared = getattr(src, "_content_length", None)
            declared = int(declared) if declared is not None else None
            if declared is not None and declared > max_bytes:
                raise FetchError(reasons.TOO_LARGE, f"{uri} is {declared} bytes, above the limit of {max_bytes}")
            started = time.monotonic()
            with open(dst_path, "wb") as dst:
                return _copy_hashing(src.read, dst, max_bytes, uri, lambda n: budget.check(started, n, declared))
    except ClientError as e:  # the object, not the endpoint: missing, forbidden
        code = e.response.get("Error", {}).get("Code", "")
        raise FetchError(reasons.DOWNLOAD_FAILED, f"{uri}: {code or type(e).__name__}: {e}")


@contextlib.contextmanager
def fetch(uri: str, max_bytes: int, policy: Optional[HttpPolicy] = None, size_hint: Optional[int] = None) -> Iterator[Fetched]:
    policy = policy or HttpPolicy()
    if size_hint is not None and size_hint > max_bytes:
        raise FetchError(reasons.TOO_LARGE, f"{size_hint} bytes, above the limit of {max_bytes}")
    if not storage.is_s3(uri) and not storage.is_http(uri):
        path = storage.local_path(uri)
        if not os.path.isfile(path):
            raise FetchError(reasons.DOWNLOAD_FAILED, f"no such file: {uri}")
        try:
            with open(path, "rb") as f:
                digest, n = _copy_hashing(f.read, None, max_bytes, uri)
        except OSError as e:
            raise FetchError(reasons.DOWNLOAD_FAILED, f"{uri}: {type(e).__name__}: {e.strerror or e}")
        if path == uri:
            yield Fetched(path, digest, n)
            return
        # a name that is not UTF-8 crashes some native readers: they get a plain-named link to the file instead
        tmpdir = tempdirs.mkdtemp(prefix="longvid-fetch-")
        try:
            link = os.path.join(tmpdir, "input" + os.path.splitext(uri)[1][:8])
            os.symlink(path, link)
            yield Fetched(link, digest, n)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return
    tmpdir = tempdirs.mkdtemp(prefix="longvid-fetch-")
    try:
        suffix = os.path.splitext(storage.path_part(uri))[1][:8]
        path = os.path.join(tmpdir, "input" + suffix)
        if storage.is_http(uri):
            digest, n = _download_http(uri, path, max_bytes, policy)
        else:
            digest, n = _download_s3(uri, path, max_bytes, policy)
        yield Fetched(path, digest, n)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
