"""Materialise an input URI as a local file, hashing the bytes (sha256) while they are read.

Local files are hashed in place; S3 objects and http(s) URLs are streamed into a temporary file that is deleted
when the context exits. Failures raise FetchError with a reject reason code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from pipeline import storage
from pipeline.errors import Rejection
from schemas import reasons

CHUNK = 1 << 20


class FetchError(Rejection):
    pass


@dataclass(frozen=True)
class HttpPolicy:
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0


@dataclass
class Fetched:
    path: str
    sha256: str
    bytes: int


def _copy_hashing(src, dst, max_bytes: int, what: str) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        n += len(chunk)
        if n > max_bytes:
            raise FetchError(reasons.TOO_LARGE, f"{what} is larger than the limit of {max_bytes} bytes")
        h.update(chunk)
        if dst is not None:
            dst.write(chunk)
    return h.hexdigest(), n


def sha256_of_file(path: str) -> str:
    with open(path, "rb") as f:
        return _copy_hashing(f, None, 1 << 62, path)[0]


def _download_http(url: str, dst_path: str, max_bytes: int, policy: HttpPolicy) -> tuple[str, int]:
    import requests

    last_error = "no attempt made"
    for attempt in range(policy.retries + 1):
        if attempt:
            time.sleep(policy.backoff_s * (2 ** (attempt - 1)))
        try:
            with requests.get(url, stream=True, timeout=policy.timeout_s) as resp:
                if resp.status_code in (408, 429) or resp.status_code >= 500:
                    last_error = f"HTTP {resp.status_code}"
                    continue
                if resp.status_code >= 400:
                    raise FetchError(reasons.DOWNLOAD_FAILED, f"HTTP {resp.status_code} for {url}")
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(reasons.TOO_LARGE, f"{url} declares {declared} bytes, above the limit of {max_bytes}")
                resp.raw.decode_content = True
                with open(dst_path, "wb") as dst:
                    return _copy_hashing(resp.raw, dst, max_bytes, url)
        except FetchError:
            raise
        except Exception as e:  # connection errors, timeouts, truncated bodies: retried
            last_error = f"{type(e).__name__}: {e}"
    raise FetchError(reasons.DOWNLOAD_FAILED, f"{url}: {last_error} after {policy.retries + 1} attempts")


@contextlib.contextmanager
def fetch(uri: str, max_bytes: int, policy: Optional[HttpPolicy] = None, size_hint: Optional[int] = None) -> Iterator[Fetched]:
    policy = policy or HttpPolicy()
    if size_hint is not None and size_hint > max_bytes:
        raise FetchError(reasons.TOO_LARGE, f"{size_hint} bytes, above the limit of {max_bytes}")
    if not storage.is_s3(uri) and not storage.is_http(uri):
        if not os.path.isfile(uri):
            raise FetchError(reasons.DOWNLOAD_FAILED, f"no such file: {uri}")
        with open(uri, "rb") as f:
            digest, n = _copy_hashing(f, None, max_bytes, uri)
        yield Fetched(uri, digest, n)
        return
    tmpdir = tempfile.mkdtemp(prefix="longvid-fetch-")
    try:
        suffix = os.path.splitext(storage.path_part(uri))[1][:8]
        path = os.path.join(tmpdir, "input" + suffix)
        if storage.is_http(uri):
            digest, n = _download_http(uri, path, max_bytes, policy)
        else:
            try:
                with storage.open_read(uri) as src, open(path, "wb") as dst:
                    digest, n = _copy_hashing(src, dst, max_bytes, uri)
            except FetchError:
                raise
            except Exception as e:
                raise FetchError(reasons.DOWNLOAD_FAILED, f"{uri}: {type(e).__name__}: {e}")
        yield Fetched(path, digest, n)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
