"""compressors/row_groups.py: the one writer behind manifest/videos.parquet, stats/videos.parquet and the HiCo index.
Whatever pieces the rows arrive in, the file is the one a whole-table write with the same row group size gives."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from compressors import token_store
from compressors.row_groups import RowGroupWriter
from schemas import tables

SCHEMA = pa.schema([("video_id", pa.string()), ("n", pa.int64()), ("tags", pa.list_(pa.string()))])


def _rows(count: int) -> pa.Table:
    return pa.table({"video_id": [f"v{i:05d}" for i in range(count)], "n": list(range(count)),
                     "tags": [[f"t{i % 3}"] * (i % 4) for i in range(count)]}, schema=SCHEMA)


def _whole(table: pa.Table, rows_per_group: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=rows_per_group, compression="zstd")
    return buf.getvalue()


def _pieces(table: pa.Table, sizes: list[int]) -> list[pa.Table]:
    out, at = [], 0
    for size in sizes:
        out.append(table.slice(at, size))
        at += size
    return out + [table.slice(at)]


@pytest.mark.parametrize("sizes", [[], [0, 1, 0, 2], [7, 7, 7], [1] * 30, [23, 0], [5, 31]])
def test_any_split_writes_the_bytes_of_a_whole_table_write(sizes):
    whole = _rows(37)
    buf = io.BytesIO()
    with RowGroupWriter(buf, SCHEMA, 8) as writer:
        for piece in _pieces(whole, sizes):
            writer.add(piece)
    assert buf.getvalue() == _whole(whole, 8)
    f = pq.ParquetFile(io.BytesIO(buf.getvalue()))
    assert [f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups)] == [8, 8, 8, 8, 5]


def test_no_rows_give_the_file_of_an_empty_table():
    buf = io.BytesIO()
    with RowGroupWriter(buf, SCHEMA, 8) as writer:
        writer.add(SCHEMA.empty_table())
    assert buf.getvalue() == _whole(SCHEMA.empty_table(), 8)


def test_an_error_leaves_the_buffered_rows_unwritten(tmp_path):
    path = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError):
        with RowGroupWriter(str(path), SCHEMA, 8) as writer:
            writer.add(_rows(12))
            raise RuntimeError("task failed")
    assert pq.ParquetFile(path).metadata.num_rows == 8  # the full group only


def test_hico_index_writer_keeps_its_order_check_and_bytes():
    segments = [{"video_id": f"v{i // 3:04d}", "file": f"s{i % 3}.parquet", "row_group": 0, "row_offset": i,
                 "num_rows": 1} for i in range(30)]
    table = token_store.index_table(segments)
    expected = _whole(table.sort_by(token_store.INDEX_ORDER), token_store.INDEX_ROW_GROUP_ROWS)
    assert token_store.index_bytes(segments) == expected
    assert token_store.index_bytes_of([table.slice(0, 12), table.slice(12)]) == expected
    assert token_store.index_bytes([]) == _whole(tables.empty(tables.HICO_INDEX), token_store.INDEX_ROW_GROUP_ROWS)
    with pytest.raises(ValueError, match="out of order"):
        with token_store.IndexWriter(io.BytesIO()) as writer:
            writer.write(table.slice(15))
            writer.write(table.slice(0, 15))
