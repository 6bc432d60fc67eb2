"""HiCo token Parquet files: the writer (one file per shard, rows sorted by video and clip) and the reader trainers
use to fetch one video's clip tokens without touching other videos' row groups.

Token column: `fixed_shape_tensor(float16, [64, C])`, no dictionary, BYTE_STREAM_SPLIT + zstd, ~256 MB row groups.
Beside the files, `index.parquet` (schemas.tables.HICO_INDEX) maps each video to its (file, row group, rows).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from compressors.arrow_fs import s3_filesystem
from compressors.row_groups import RowGroupWriter
from schemas import layout, tables

ROW_GROUP_BYTES = 256 * 1024**2
_TOKEN_LEAF = f"{tables.HICO_TOKEN_COLUMN}.list.element"


def tokens_table(rows: list[dict], tokens: np.ndarray) -> pa.Table:
    """Rows (all HICO columns but `tokens`) plus a float16 [n, 64, C] array, sorted by (video_id, clip_index)."""
    if tokens.ndim != 3 or len(rows) != tokens.shape[0]:
        raise ValueError(f"{len(rows)} rows but tokens of shape {tokens.shape}")
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["video_id"], rows[i]["clip_index"]))
    tokens = np.ascontiguousarray(tokens[order].astype(np.float16, copy=False))
    schema = tables.hico_schema(tokens.shape[2], tokens.shape[1])
    columns = {}
    for field in schema:
        if field.name == tables.HICO_TOKEN_COLUMN:
            columns[field.name] = pa.FixedShapeTensorArray.from_numpy_ndarray(tokens)
        else:
            columns[field.name] = pa.array([rows[i][field.name] for i in order], type=field.type)
    return pa.table(columns, schema=schema)


def row_group_rows(table: pa.Table, target_bytes: int = ROW_GROUP_BYTES) -> int:
    per_row = max(1, table.nbytes // max(table.num_rows, 1))
    return max(1, target_bytes // per_row)


def write_tokens(sink, table: pa.Table, target_bytes: int = ROW_GROUP_BYTES) -> list[dict]:
    """Write `table` to a path or file object; return its index segments (file left for the caller to fill)."""
    rows_per_group = row_group_rows(table, target_bytes)
    dictionary_columns = [n for n in table.column_names if n != tables.HICO_TOKEN_COLUMN]
    pq.write_table(table, sink, row_group_size=rows_per_group, compression="zstd",
                   use_dictionary=dictionary_columns, column_encoding={_TOKEN_LEAF: "BYTE_STREAM_SPLIT"},
                   write_statistics=["video_id", "clip_index"])
    return index_segments(table.column("video_id").to_pylist(), rows_per_group)


def index_segments(video_ids: list[str], rows_per_group: int) -> list[dict]:
    segments: list[dict] = []
    for row, vid in enumerate(video_ids):
        group, offset = divmod(row, rows_per_group)
        last = segments[-1] if segments else None
        if last and last["video_id"] == vid and last["row_group"] == group:
            last["num_rows"] += 1
        else:
            segments.append({"video_id": vid, "file": None, "row_group": group, "row_offset": offset, "num_rows": 1})
    return segments


@dataclass
class VideoTokens:
    video_id: str
    tokens: np.ndarray  # float16 [n_clips, 64, C]
    clip_index: np.ndarray
    t_start_s: np.ndarray
    t_end_s: np.ndarray
    padded: np.ndarray
    random_init: bool


def _filesystem(uri: str, s3_endpoint_url: Optional[str]):
    if uri.startswith("s3://"):
        return s3_filesystem(s3_endpoint_url), uri[len("s3://"):].rstrip("/")
    return None, os.path.abspath(uri)


class HicoReader:
    """Reads one video's clip tokens from `<out>/hico/<stage>` (local, memory-mapped, or s3://)."""

    _COLUMNS = ["clip_index", "t_start_s", "t_end_s", "padded", "random_init", tables.HICO_TOKEN_COLUMN]

    def __init__(self, hico_stage_uri: str, s3_endpoint_url: Optional[str] = None, prefetch_depth: int = 2):
        self.fs, self.base = _filesystem(hico_stage_uri, s3_endpoint_url)
        index = pq.read_table(self._open(layout.HICO_INDEX_NAME)).to_pylist()
        self.segments: dict[str, list[dict]] = {}
        for seg in index:
            self.segments.setdefault(seg["video_id"], []).append(seg)
        self._files: dict[str, pq.ParquetFile] = {}
        # The last decoded row group: reading videos in file order decodes each row group once.
        self._cached: tuple[tuple[str, int], pa.Table] | None = None
        # A reader walking a file in order gets its row groups from an Arrow scan that decodes up to
        # `prefetch_depth` groups ahead on Arrow's own threads (the machinery read_table uses); a random lookup,
        # or any lookup with prefetch_depth 0, decodes just the group it needs.
        self._scan: tuple[str, int, object] | None = None  # (file, next row group, batch iterator)
        self.prefetch_depth = prefetch_depth

    def _open(self, name: str):
        path = f"{self.base}/{name}"
        if self.fs is None:
            return pa.memory_map(path, "r")
        return self.fs.open_input_file(path)

    def _file(self, name: str) -> pq.ParquetFile:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = pq.ParquetFile(self._open(name))
        return f

    def _start_scan(self, file: str, index: int) -> None:
        import pyarrow.dataset as ds
        from pyarrow import fs

        filesystem = self.fs if self.fs is not None else fs.LocalFileSystem()
        groups = list(range(index, self._file(file).num_row_groups))
        fragment = ds.ParquetFileFormat().make_fragment(f"{self.base}/{file}", filesystem=filesystem)
        batches = fragment.subset(row_group_ids=groups).to_batches(
            columns=self._COLUMNS, batch_size=2**31 - 1, batch_readahead=self.prefetch_depth, fragment_readahead=1,
            use_threads=True)
        self._scan = (file, index, iter(batches))

    def _next_scanned(self, file: str, index: int) -> pa.Table:
        want = self._file(file).metadata.row_group(index).num_rows
        batches, rows = [], 0
        _, _, it = self._scan
        while rows < want:  # a group normally arrives as one batch; a scanner may split it, never merge two
            batch = next(it)
            batches.append(batch)
            rows += batch.num_rows
        self._scan = (file, index + 1, it)
        return pa.Table.from_batches(batches)

    def _row_group(self, file: str, index: int) -> pa.Table:
        key = (file, index)
        if self._cached is None or self._cached[0] != key:
            if self._scan is not None and self._scan[:2] == key:
                table = self._next_scanned(file, index)
            elif self.prefetch_depth > 0 and (
                    index == 0 or (self._cached is not None and self._cached[0] == (file, index - 1))):
                self._start_scan(file, index)
                table = self._next_scanned(file, index)
            else:
                self._scan = None
                table = self._file(file).read_row_group(index, columns=self._COLUMNS)
            self._cached = (key, table)
        return self._cached[1]

    def video_ids(self) -> list[str]:
        return sorted(self.segments)

    def read(self, video_id: str) -> VideoTokens:
        segs = self.segments.get(video_id)
        if not segs:
            raise KeyError(f"video {video_id} has no HiCo tokens under {self.base}")
        parts = []
        for seg in segs:
            group = self._row_group(seg["file"], seg["row_group"])
            parts.append(group.slice(seg["row_offset"], seg["num_rows"]))
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        token_col = table.column(tables.HICO_TOKEN_COLUMN)
        chunks = [c.to_numpy_ndarray() for c in token_col.chunks]
        tokens = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        return VideoTokens(
            video_id=video_id,
            tokens=tokens,
            clip_index=table.column("clip_index").to_numpy(),
            t_start_s=table.column("t_start_s").to_numpy(),
            t_end_s=table.column("t_end_s").to_numpy(),
            padded=table.column("padded").to_numpy(zero_copy_only=False),
            random_init=bool(table.column("random_init")[0].as_py()),
        )


INDEX_ORDER = [("video_id", "ascending"), ("file", "ascending"), ("row_group", "ascending")]
# Rows per row group of the index file. A writer holds at most one group, so the stage writing the index needs memory
# that does not grow with videos; an index of up to this many rows is one row group, as pyarrow's default writes it.
INDEX_ROW_GROUP_ROWS = 65_536


def index_table(segments: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(segments, schema=tables.HICO_INDEX)


class IndexWriter:
    """Writes an index file from parts arriving in (video_id, file, row_group) order (each part sorted here), in
    row groups of INDEX_ROW_GROUP_ROWS, so the bytes depend on the rows only, not on how they were split in parts."""

    def __init__(self, where):
        self._writer = RowGroupWriter(where, tables.HICO_INDEX, INDEX_ROW_GROUP_ROWS)
        self._last: tuple | None = None

    def write(self, part: pa.Table) -> None:
        if not part.num_rows:
            return
        part = part.cast(tables.HICO_INDEX).sort_by(INDEX_ORDER)
        first = tuple(part[c][0].as_py() for c, _ in INDEX_ORDER)
        if self._last is not None and first < self._last:
            raise ValueError(f"HiCo index rows out of order: {first} after {self._last}")
        self._last = tuple(part[c][-1].as_py() for c, _ in INDEX_ORDER)
        self._writer.add(part)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc) -> None:
        self._writer.__exit__(*exc)


def index_bytes_of(parts: list[pa.Table]) -> bytes:
    """The index file of some index_table parts: their rows in (video_id, file, row_group) order."""
    table = pa.concat_tables([tables.empty(tables.HICO_INDEX), *parts])
    buf = io.BytesIO()
    with IndexWriter(buf) as writer:
        writer.write(table)
    return buf.getvalue()


def index_bytes(segments: list[dict]) -> bytes:
    return index_bytes_of([index_table(segments)])
