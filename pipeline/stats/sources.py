"""Read a finished build's output folder (local path or s3:// URI) for the auditor tools: where each table lives,
non-recursive listings (a frame-payload mixture folder can hold millions of JPEGs, never walk it), and Parquet reads.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa

from compressors.arrow_fs import s3_filesystem
from pipeline.io import storage
from schemas import layout


@dataclass(frozen=True)
class Listing:
    dirs: list[str]  # names of the sub-folders
    files: list[str]  # names of the files (temporaries of killed runs left out)


class BuildOutput:
    def __init__(self, out_uri: str):
        self.root = out_uri.rstrip("/") if storage.is_s3(out_uri) else storage.normalize_local(out_uri)

    def uri(self, relative: str) -> str:
        return storage.join(self.root, relative)

    def exists(self, relative: str) -> bool:
        return storage.exists(self.uri(relative))

    def read_json(self, relative: str):
        return json.loads(storage.read_bytes(self.uri(relative)))

    def read_table(self, relative: str, columns: list[str] | None = None) -> pa.Table:
        return storage.read_parquet(self.uri(relative), columns)

    def listing(self, relative: str) -> Listing:
        uri = self.uri(relative)
        if storage.is_s3(uri):
            bucket, prefix = storage.split_s3(uri)
            prefix = prefix.rstrip("/") + "/"
            dirs, files = [], []
            with storage.s3_operation("ListObjectsV2", f"s3://{bucket}/{prefix}"):
                pages = storage.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix,
                                                                                     Delimiter="/")
                for page in pages:
                    dirs += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
                    files += [o["Key"][len(prefix):] for o in page.get("Contents", [])]
        elif os.path.isdir(uri):
            names = os.listdir(uri)
            dirs = [n for n in names if os.path.isdir(os.path.join(uri, n))]
            files = [n for n in names if os.path.isfile(os.path.join(uri, n))]
        else:
            dirs, files = [], []
        files = [f for f in files if f and not storage.is_temporary(f)]
        return Listing(sorted(d for d in dirs if d), sorted(files))

    def parquet_parts(self, relative_dir: str, exclude: tuple[str, ...] = ()) -> list[str]:
        """Relative paths of the Parquet files directly inside a folder, sorted."""
        names = self.listing(relative_dir).files
        return [f"{relative_dir}/{n}" for n in names if n.endswith(".parquet") and n not in exclude]

    def mixture_stages(self) -> list[str]:
        """Curriculum stages the `mix` stage wrote (folders under mixtures/ holding a membership table)."""
        return [s for s in self.listing(layout.MIXTURES_DIR).dirs if self.exists(layout.mixture_members_path(s))]

    def mixture_task_files(self, stage: str) -> dict[str, str]:
        """task -> relative path of mixtures/<stage>/<task>.jsonl."""
        return {n.removesuffix(".jsonl"): f"{layout.mixture_dir(stage)}/{n}"
                for n in self.listing(layout.mixture_dir(stage)).files if n.endswith(".jsonl")}

    def hico_stages(self) -> list[str]:
        return [s for s in self.listing(layout.HICO_DIR).dirs if self.exists(layout.hico_index_path(s))]

    def iter_lines(self, relative: str):
        """Lines of a text file, streamed (a mixture file can be gigabytes)."""
        uri = self.uri(relative)
        if storage.is_s3(uri):
            with storage.open_read(uri) as body, storage.s3_operation("GetObject", uri):
                lines = (raw.decode("utf-8") for raw in body.iter_lines(chunk_size=1 << 20))
                yield from (line for line in lines if line.strip())
            return
        with open(uri, encoding="utf-8") as f:
            yield from (line for line in f if line.strip())

    def iter_line_range(self, relative: str, start: int, end: int, block: int = 1 << 20):
        """Non-blank lines (bytes, newline dropped) of a text file that begin at a byte in [start, end): cutting a
        file at any offsets gives every line to exactly one range. Read as one stream from `start - 1`."""
        uri = self.uri(relative)
        begin = max(start - 1, 0)
        with _open_from(uri, begin) as stream:
            position = begin  # file offset of the first byte of `pending`
            pending = b""
            skip = start > 0  # the line holding byte start - 1 belongs to the range before
            while True:
                data = stream.read(block)
                lines = (pending + data).split(b"\n")
                pending = lines.pop() if data else b""  # the last piece may go on in the next block
                for line in lines:
                    line_start = position
                    position += len(line) + 1
                    if skip:
                        skip = False
                    elif line_start >= end:
                        return
                    elif line.strip():
                        yield line
                if not data:
                    return

    def open_parquet(self, relative: str):
        """A pyarrow ParquetFile read lazily (ranged reads on S3): only the row groups consumed are in memory."""
        import pyarrow.parquet as pq

        filesystem, path_of = self.arrow_filesystem()
        return pq.ParquetFile(filesystem.open_input_file(path_of(relative)))

    def batches(self, relative: str, columns: list[str], rows: int) -> Iterator:
        """A Parquet file's `columns`, `rows` at a time, one row group after the other (a reader per row group, so
        none keeps the buffers of the groups before), handing the allocator's freed pages back after each group:
        without that the RSS grew with the bytes read (~0.9 KiB a video over a manifest read, measured) while Arrow's
        live bytes stayed at a few MiB. Lazy, ranged reads on S3; a network failure there is StorageUnavailable."""
        with arrow_s3_operation("GetObject", self.uri(relative)):
            parquet = self.open_parquet(relative)
            for group in range(parquet.num_row_groups):
                yield from parquet.iter_batches(rows, row_groups=[group], columns=columns, use_threads=False)
                pa.default_memory_pool().release_unused()

    def row_groups(self, relative: str, columns: list[str]) -> Iterator[tuple[int, pa.Table]]:
        """(index, its `columns`) of each row group of a Parquet file in turn, handing the freed pages back after
        each as `batches` does: for readers that need to know which row group holds which rows."""
        with arrow_s3_operation("GetObject", self.uri(relative)):
            parquet = self.open_parquet(relative)
            for group in range(parquet.num_row_groups):
                yield group, parquet.read_row_group(group, columns=columns, use_threads=False)
                pa.default_memory_pool().release_unused()

    def arrow_filesystem(self):
        """(pyarrow filesystem, function mapping a relative path to that filesystem's path) for lazy dataset scans.

        S3 goes through pyarrow's own client with the standard AWS credential chain, the configured endpoint and the
        configured timeouts and attempts (storage.s3_*), so a hanging endpoint fails as it does for boto3."""
        from pyarrow import fs

        if not storage.is_s3(self.root):
            return fs.LocalFileSystem(), self.uri
        st = storage.settings()
        filesystem = s3_filesystem(st.endpoint_url, st.region, connect_timeout_s=st.connect_timeout_s,
                                   request_timeout_s=st.read_timeout_s, max_attempts=st.max_attempts)
        return filesystem, lambda relative: self.uri(relative)[len("s3://"):]


@contextlib.contextmanager
def _open_from(uri: str, offset: int) -> Iterator:
    """A binary stream of a local file or an S3 object from `offset` to its end (one ranged GET on S3)."""
    if storage.is_s3(uri):
        bucket, key = storage.split_s3(uri)
        with storage.s3_operation("GetObject", uri):
            body = storage.s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-")["Body"]
            try:
                yield body
            finally:
                body.close()
    else:
        with open(storage.local_path(uri), "rb") as f:
            f.seek(offset)
            yield f


@contextlib.contextmanager
def arrow_s3_operation(operation: str, uri: str) -> Iterator[None]:
    """Like storage.s3_operation for reads through pyarrow's own S3 client (dataset scans): its network failures
    (an OSError naming an AWS network or timeout error) become StorageUnavailable; other errors pass through."""
    try:
        yield
    except OSError as e:
        text = str(e)
        if storage.is_s3(uri) and "AWS Error" in text and any(m in text for m in ARROW_NETWORK_MARKERS):
            raise storage.StorageUnavailable(storage.settings().endpoint_url or "(AWS default endpoint)", operation,
                                             uri, text.splitlines()[0]) from None
        raise


ARROW_NETWORK_MARKERS = ("NETWORK_CONNECTION", "REQUEST_TIMEOUT", "SLOW_DOWN", "SERVICE_UNAVAILABLE", "INTERNAL_FAILURE",
                         "curlCode", "Timeout", "timed out")
