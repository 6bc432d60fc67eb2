"""One interface over local paths and s3:// URIs: read, list, and atomic writes (rename locally, completed upload on S3).

Credentials come from boto3's standard chain; they are never logged or written anywhere.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import stat
import threading
import uuid
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional

from pipeline.core import tempdirs
from schemas.errors import LongVidError

_local = threading.local()


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = 4
    retry_mode: str = "standard"


_settings = S3Settings()


def configure(endpoint_url: Optional[str] = None, region: Optional[str] = None, **timeouts) -> None:
    """Set the S3 endpoint (and optionally S3Settings' timeouts and retries) for this process; each Ray task calls
    this with the job's config."""
    global _settings
    new = S3Settings(endpoint_url, region, **timeouts)
    if new != _settings:
        _settings = new
        _local.__dict__.pop("client", None)


class StorageUnavailable(LongVidError, RuntimeError):
    """The S3 endpoint did not answer (down, hanging, throttling past the retries): a systemic failure that stops
    the job, never a reject. Names the endpoint, the operation and the object."""

    label = "error: storage"
    systemic = True

    def __init__(self, endpoint: str, operation: str, uri: str, detail: str):
        self.endpoint, self.operation, self.uri, self.detail = endpoint, operation, uri, detail
        super().__init__(f"S3 endpoint {endpoint} failed {operation} of {uri} ({detail})")

    def __reduce__(self):  # crosses Ray task boundaries intact
        return type(self), (self.endpoint, self.operation, self.uri, self.detail)


_SYSTEMIC_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                   "InternalError", "ServiceUnavailable", "500", "502", "503", "504"}


def _endpoint_name() -> str:
    return _settings.endpoint_url or "(AWS default endpoint)"


def _network_error(e: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError
    from urllib3.exceptions import HTTPError as Urllib3Error

    return isinstance(e, (BotoConnectionError, HTTPClientError, Urllib3Error, ConnectionError, TimeoutError))


@contextlib.contextmanager
def s3_operation(operation: str, uri: str) -> Iterator[None]:
    """Turn an S3 endpoint that is down, hanging or throttling (after botocore's own retries) into
    StorageUnavailable; a per-object answer (404, 403) passes through unchanged."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as e:
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _SYSTEMIC_CODES or status.startswith("5"):
            raise StorageUnavailable(_endpoint_name(), operation, uri, f"{code or status}: {err.get('Message', '')}")
        raise
    except StorageUnavailable:
        raise
    except Exception as e:
        if _network_error(e):
            detail = f"{type(e).__name__}: {e}".splitlines()[0]
            raise StorageUnavailable(_endpoint_name(), operation, uri, detail) from None
        raise


def settings() -> S3Settings:
    return _settings


def s3_client():
    client = getattr(_local, "client", None)
    if client is None:
        import boto3
        from botocore.config import Config

        st = _settings
        kwargs = {"config": Config(connect_timeout=st.connect_timeout_s, read_timeout=st.read_timeout_s,
                                   retries={"max_attempts": st.max_attempts, "mode": st.retry_mode})}
        if _settings.endpoint_url:
            kwargs["endpoint_url"] = _settings.endpoint_url
        if _settings.region:
            kwargs["region_name"] = _settings.region
        client = boto3.session.Session().client("s3", **kwargs)
        _local.client = client
    return client


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def path_part(uri: str) -> str:
    """The URI without an http query string (only URLs carry one; a local name may contain '?')."""
    return uri.split("?", 1)[0] if is_http(uri) else uri


def extension(uri: str) -> str:
    """Lower-case extension of the URI's last path segment, '' when it has none."""
    name = path_part(uri).rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    return bucket, key


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        out = base.rstrip("/")
        for p in parts:
            out = f"{out}/{p.strip('/')}"
        return out
    return os.path.join(base, *parts)


def parent(uri: str) -> str:
    """The folder holding a file: a local directory (absolute) or an s3:// prefix."""
    return uri.rstrip("/").rsplit("/", 1)[0] if is_s3(uri) else os.path.dirname(os.path.abspath(uri))


def resolve_from(folder: str, ref: str) -> str:
    """`ref` as written in a file in `folder` (local directory or s3:// prefix), normalised; absolute paths and
    s3:// URIs stay as they are."""
    if is_s3(ref) or os.path.isabs(ref):
        return ref
    if is_s3(folder):
        bucket, key = split_s3(folder)
        return f"s3://{bucket}/{posixpath.normpath(posixpath.join(key, ref))}"
    return os.path.normpath(os.path.join(folder, ref))


def normalize_local(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


FILE_SCHEME = "file://"


def local_uri(path: str) -> str:
    """How a local file is named in the tables: its path, or, when the name holds bytes that are not UTF-8 (a str
    with surrogate escapes from os.listdir), a `file://` URI with every such byte percent-escaped, which
    `local_path` turns back into the exact name."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        from urllib.parse import quote_from_bytes

        return FILE_SCHEME + quote_from_bytes(os.fsencode(path), safe="/")


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (a plain path, or a `file://` URI from `local_uri`)."""
    if uri.startswith(FILE_SCHEME):
        from urllib.parse import unquote_to_bytes

        return os.fsdecode(unquote_to_bytes(uri[len(FILE_SCHEME):]))
    return uri


def exists(uri: str) -> bool:
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            with s3_operation("HeadObject", uri):
                s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
    return os.path.exists(local_path(uri))


def size(uri: str) -> int:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3_operation("HeadObject", uri):
            return int(s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
    return os.path.getsize(local_path(uri))


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3_operation("GetObject", uri):
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    with open(local_path(uri), "rb") as f:
        return f.read()


def read_range(uri: str, offset: int, size: int) -> bytes:
    """`size` bytes at `offset` of a local file or an S3 object (one ranged GET)."""
    if size == 0:
        return b""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3_operation("GetObject", uri):
            body = s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + size - 1}")
            with body["Body"] as stream:
                data = stream.read()
    else:
        fd = os.open(uri, os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
    if len(data) != size:
        raise IOError(f"{uri}: expected {size} bytes at offset {offset}, got {len(data)} (truncated file?)")
    return data


@contextlib.contextmanager
def open_read(uri: str) -> Iterator[BinaryIO]:
    """A binary stream of a local file or an S3 object (streamed, not loaded whole)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3_operation("GetObject", uri):
            body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
            try:
                yield body
            finally:
                body.close()
    else:
        with open(local_path(uri), "rb") as f:
            yield f


COPY_BYTES = 1 << 20  # read at a time by copy_into


def copy_into(uri: str, dst: BinaryIO) -> None:
    """A local file's or an S3 object's bytes appended to an open binary file, a chunk at a time."""
    with open_read(uri) as src:
        shutil.copyfileobj(src, dst, COPY_BYTES)


def list_files(uri: str) -> Iterator[tuple[str, int]]:
    """(uri, size) of every file under a local directory (recursive) or an S3 prefix (paginated), sorted."""
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        with s3_operation("ListObjectsV2", f"s3://{bucket}/{prefix}"):
            for page in pages:
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith("/"):
                        yield f"s3://{bucket}/{obj['Key']}", int(obj["Size"])
        return
    yield from _local_files_sorted(uri)


def _local_files_sorted(top: str) -> Iterator[tuple[str, int]]:
    """(path, size) of every file under `top` in the order of their sorted paths, holding one directory's names at a
    time. A directory is named with a trailing "/" while its siblings are sorted: that is where its paths fall in a
    sort of the whole list ("a-b" < "a.txt" < "a/..." < "a0"). Symbolic links to directories are not followed (as
    os.walk); links to files are listed with their target's size."""
    try:
        with os.scandir(top) as listing:
            names = [e.name + "/" if e.is_dir(follow_symlinks=False) else e.name for e in listing]
    except OSError:
        return
    names.sort()
    for name in names:
        if name.endswith("/"):
            yield from _local_files_sorted(os.path.join(top, name[:-1]))
            continue
        path = os.path.join(top, name)
        try:
            st = os.stat(path)
        except OSError:  # a broken link, or removed since its folder was listed
            continue
        if stat.S_ISREG(st.st_mode):
            yield path, st.st_size


TEMPORARY_MARKER = ".tmp-"  # local outputs are written as `<name>.tmp-<random>` and renamed when complete


def _temporary_path(uri: str) -> str:
    return f"{uri}{TEMPORARY_MARKER}{uuid.uuid4().hex[:8]}"


def is_temporary(name: str) -> bool:
    """A file name of an output still being written (or left by a killed run), never a committed one."""
    return TEMPORARY_MARKER in name


def list_committed(uri_dir: str) -> Iterator[tuple[str, str, int]]:
    """(path relative to `uri_dir` with `/` separators, URI, size) of every committed file under a local directory
    or an S3 prefix (recursive, sorted); temporaries are skipped."""
    root = uri_dir.rstrip("/") if is_s3(uri_dir) else os.path.join(uri_dir, "")
    for uri, size in list_files(uri_dir):
        rel = uri[len(root):].lstrip("/").replace(os.sep, "/")
        if not is_temporary(rel.rsplit("/", 1)[-1]):
            yield rel, uri, size


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic write: a reader sees the old content or the new one, never a partial file."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3_operation("PutObject", uri):
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
    tmp = _temporary_path(uri)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, uri)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_if_changed(uri: str, data: bytes) -> bool:
    """Write only when the content differs, so a rerun that computes the same result touches nothing."""
    if exists(uri) and read_bytes(uri) == data:
        return False
    write_bytes(uri, data)
    return True


@contextlib.contextmanager
def staged_output(uri: str) -> Iterator[str]:
    """A local path to write a large output to; on clean exit it is committed to `uri` (rename or upload)."""
    if is_s3(uri):
        fd, tmp = tempdirs.mkstemp(prefix="longvid-", suffix=".part")
        os.close(fd)
        try:
            yield tmp
            bucket, key = split_s3(uri)
            with s3_operation("PutObject (upload)", uri):
                s3_client().upload_file(tmp, bucket, key)  # multipart upload: the object appears only when complete
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
    tmp = _temporary_path(uri)
    try:
        yield tmp
        os.replace(tmp, uri)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _same_content(local_path: str, uri: str) -> bool:
    if not exists(uri) or size(uri) != os.path.getsize(local_path):
        return False
    with open(local_path, "rb") as mine, open_read(uri) as theirs:
        while True:
            a = mine.read(1 << 20)
            b = b""
            while len(b) < max(len(a), 1):  # a stream may return fewer bytes than asked
                chunk = theirs.read(max(len(a), 1) - len(b))
                if not chunk:
                    break
                b += chunk
            if a != b:
                return False
            if not a:
                return True


def commit_file_if_changed(local_path: str, uri: str) -> bool:
    """Copy a local file to `uri` (atomically) unless `uri` already holds the same bytes."""
    if _same_content(local_path, uri):
        return False
    with staged_output(uri) as staged:
        shutil.copyfile(local_path, staged)
    return True


def stage_file_if_changed(local_path: str, uri: str, staging_uri: str) -> bool:
    """Move a local file to `staging_uri` (to be committed to `uri` later with `move`) unless `uri` already holds
    the same bytes; True when staged. The local file is consumed either way."""
    try:
        if _same_content(local_path, uri):
            return False
        with staged_output(staging_uri) as staged:
            shutil.move(local_path, staged)
        return True
    finally:
        if os.path.exists(local_path):
            os.unlink(local_path)


def move(src_uri: str, dst_uri: str) -> None:
    """Replace `dst_uri` with `src_uri`'s file, both local or both on S3 (a rename, or a server-side copy, multipart
    when large, then a delete): a reader sees the old content or the new one."""
    if is_s3(src_uri):
        src_bucket, src_key = split_s3(src_uri)
        bucket, key = split_s3(dst_uri)
        with s3_operation("CopyObject", dst_uri):
            s3_client().copy({"Bucket": src_bucket, "Key": src_key}, bucket, key)
        remove_files([src_uri])
        return
    os.makedirs(os.path.dirname(dst_uri) or ".", exist_ok=True)
    os.replace(src_uri, dst_uri)


@contextlib.contextmanager
def local_output_if_changed(uri: str) -> Iterator[str]:
    """A local path to stream a large output into; on clean exit it is committed to `uri` only when its content
    differs from what is there (the streaming counterpart of write_bytes_if_changed)."""
    fd, tmp = tempdirs.mkstemp(prefix="longvid-", suffix=".out")
    os.close(fd)
    try:
        yield tmp
        commit_file_if_changed(tmp, uri)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(uri_dir: str) -> None:
    """Temporaries left by a killed run (local only; S3 multipart uploads that never completed are invisible)."""
    if is_s3(uri_dir) or not os.path.isdir(uri_dir):
        return
    for root, _, files in os.walk(uri_dir):
        for name in files:
            if is_temporary(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, name))


def remove_files(uris: list[str], prune_below: str | None = None) -> None:
    """Delete files (local or s3://, batched on S3). Locally, folders they leave empty are removed up to, not
    including, `prune_below`."""
    s3_uris = [u for u in uris if is_s3(u)]
    by_bucket: dict[str, list[str]] = {}
    for uri in s3_uris:
        bucket, key = split_s3(uri)
        by_bucket.setdefault(bucket, []).append(key)
    for bucket, keys in by_bucket.items():
        for i in range(0, len(keys), 1000):  # the DeleteObjects limit
            batch = [{"Key": k} for k in keys[i:i + 1000]]
            with s3_operation("DeleteObjects", f"s3://{bucket}/{batch[0]['Key']}"):
                s3_client().delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    for path in (u for u in uris if not is_s3(u)):
        os.unlink(path)
        if prune_below is None:
            continue
        folder = os.path.dirname(path)
        with contextlib.suppress(OSError):  # not empty: something there is still in use
            while folder.startswith(os.path.join(prune_below, "")) and not os.listdir(folder):
                os.rmdir(folder)
                folder = os.path.dirname(folder)


def remove_folder(uri_dir: str) -> None:
    """A local folder and everything under it, or every object under an S3 prefix (one listing, batched deletes);
    nothing when it is not there."""
    if is_s3(uri_dir):
        remove_files([uri for uri, _ in list_files(uri_dir)])
    else:
        shutil.rmtree(uri_dir, ignore_errors=True)


def read_parquet(uri: str, columns: list[str] | None = None):
    import pyarrow.parquet as pq

    # One file through ParquetFile: pq.read_table's dataset machinery keeps ~25 KiB per call in the process, which
    # adds up in a driver that reads thousands of committed parts.
    return pq.ParquetFile(io.BytesIO(read_bytes(uri)) if is_s3(uri) else uri).read(columns=columns)


def parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_parquet(uri: str, table) -> bool:
    return write_bytes_if_changed(uri, parquet_bytes(table))
