"""A k-way merge of sorted Arrow streams that works a batch at a time instead of a row at a time. Each round takes,
from every stream, its buffered rows whose key is below a bound no larger than any stream's last buffered key (the
smallest of the streams' keys a round's share of rows into their buffers), and sorts just those: every row left
anywhere is at least the bound, so the rounds come out in global order, and all
the rows of a key below the bound are in the buffers, so the stable sort of the pieces concatenated in stream order
keeps equal keys in stream order, as `heapq.merge` does. When no buffered row is below the bound, the rows equal to
it are drained stream by stream, across batches. The merger holds one batch per stream plus one round."""

from __future__ import annotations

import bisect
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from schemas import mixture

ROUND_ROWS = 65536  # rows a round sorts at most (about): bounds the merge's memory however many streams there are
KeyOf = Callable[[pa.Table], pa.Array]  # a table's sort key, one string per row (compared as UTF-8 bytes)


class _Stream:
    """The not yet merged rows of one sorted stream: a buffered batch from row `pos` on, with its keys as Python
    strings (binary search on them costs less than an Arrow call per stream and round)."""

    def __init__(self, batches: Iterator[pa.RecordBatch], key_of: KeyOf):
        self._batches, self._key_of = batches, key_of
        self.rows: pa.Table | None = None
        self._next_batch()

    def _next_batch(self) -> None:
        self.rows = None
        for batch in self._batches:
            if batch.num_rows:
                self.rows = pa.Table.from_batches([batch])
                self.keys = self._key_of(self.rows).to_pylist()
                self.pos = 0
                return

    @property
    def first(self) -> str:
        return self.keys[self.pos]

    def key_at(self, i: int) -> str:
        """The key of the i-th row left, or the last buffered key when fewer rows are left."""
        return self.keys[min(self.pos + i, len(self.keys) - 1)]

    def take_below(self, bound: str) -> pa.Table:
        """Removes and returns the buffered rows with key < bound (a run from `pos`: the stream is sorted)."""
        return self._take(bisect.bisect_left(self.keys, bound, self.pos))

    def take_equal(self, bound: str) -> list[pa.Table]:
        """Removes and returns the rows with key == bound, the smallest key left, over as many batches as hold it."""
        pieces = []
        while self.rows is not None and self.first == bound:
            pieces.append(self._take(bisect.bisect_right(self.keys, bound, self.pos)))
        return pieces

    def _take(self, end: int) -> pa.Table:
        head = self.rows.slice(self.pos, end - self.pos)
        self.pos = end
        if end == len(self.keys):
            self._next_batch()
        return head


def merge_sorted(streams: Iterable[Iterator[pa.RecordBatch]], key_of: KeyOf,
                 round_rows: int = ROUND_ROWS) -> Iterator[pa.Table]:
    """Tables whose concatenation is the merge of the streams (each sorted by key_of), in key order, of about
    `round_rows` rows at most (more when many rows share a key)."""
    live = [s for s in (_Stream(b, key_of) for b in streams) if s.rows is not None]
    while live:
        share = round_rows // len(live)
        bound = min(s.key_at(share) for s in live)
        pieces = [s.take_below(bound) for s in live if s.first < bound]
        if pieces:
            merged = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
            yield merged.take(pc.sort_indices(key_of(merged))) if len(pieces) > 1 else merged
        else:
            yield pa.concat_tables([p for s in live for p in s.take_equal(bound)])
        live = [s for s in live if s.rows is not None]


def regroup(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The same rows in tables of exactly `rows` rows (the last one shorter), e.g. one per Parquet row group."""
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        pending.append(table)
        held += table.num_rows
        if held >= rows:
            whole = pa.concat_tables(pending)
            full = held - held % rows
            for start in range(0, full, rows):
                yield whole.slice(start, rows)
            pending, held = [whole.slice(full)], held - full
    if held:
        yield pa.concat_tables(pending)


def joined_key(*columns: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One string key that sorts like the tuple of string columns: joined with NUL, which sorts below every other
    character and does not occur in them."""
    key = pc.binary_join_element_wise(*columns, "\x00")
    return key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key


TURN_DIGITS = 10  # a turn number zero-padded to this width sorts as a number within the members' key
RECORD_COLUMNS = [mixture.ORDER_COLUMN, "line", "internvideo_line", "shard"]  # what the records merge reads
MEMBER_COLUMNS = [mixture.ORDER_COLUMN, *mixture.MIX_MEMBERS.names]


def order_key(rows: pa.Table) -> pa.Array:
    """Record parts are sorted by their seeded order key."""
    return rows[mixture.ORDER_COLUMN]


def members_key(rows: pa.Table) -> pa.Array:
    """Members parts are sorted by (task, record_id, turn): one string key, the turn zero-padded."""
    turn = pc.utf8_lpad(pc.cast(rows["turn"], pa.string()), TURN_DIGITS, "0")
    return joined_key(rows["task"], rows["record_id"], turn)
