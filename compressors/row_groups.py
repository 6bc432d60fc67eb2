"""A Parquet file written as tables arrive, in row groups of a fixed number of rows: the bytes of one whole-table
write with that row group size, however the rows were split on the way, while holding at most one group plus the
last table added. The manifest's videos table, stats/videos.parquet and the HiCo index are written with it."""

from __future__ import annotations

from typing import Self

import pyarrow as pa
import pyarrow.parquet as pq


class RowGroupWriter:
    """`add` tables of `schema` in file order; `close` writes the last, shorter group (or, with no rows at all, the
    file a whole-table write of an empty table gives). As a context manager it closes on success; on an error it
    closes the file without writing what is buffered."""

    def __init__(self, where, schema: pa.Schema, rows_per_group: int, compression: str = "zstd"):
        self.writer = pq.ParquetWriter(where, schema, compression=compression)
        self.schema = schema
        self.rows_per_group = rows_per_group
        self.pending: list[pa.Table] = []
        self.rows = 0  # buffered
        self.written = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.close()
        else:
            self.writer.close()

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        while self.rows >= self.rows_per_group:
            self._flush(self.rows_per_group)

    def _flush(self, n: int) -> None:
        buffered = pa.concat_tables(self.pending)
        # one chunk per column: the pages written do not depend on how the rows arrived
        self.writer.write_table(buffered.slice(0, n).combine_chunks(), row_group_size=self.rows_per_group)
        rest = buffered.slice(n)
        self.pending = [rest] if rest.num_rows else []
        self.rows -= n
        self.written += n

    def close(self) -> None:
        if self.rows:
            self._flush(self.rows)
        elif not self.written:
            self.writer.write_table(self.schema.empty_table())
        self.writer.close()
