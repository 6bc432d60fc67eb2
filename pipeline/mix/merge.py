"""A k-way merge of sorted Arrow streams that works a batch at a time instead of a row at a time. Each round takes,
from every stream, its buffered rows whose key is below the smallest "last buffered key" of all streams (the bound),
and sorts just those: every row left anywhere is at least the bound, so the rounds come out in global order, and all
the rows of a key below the bound are in the buffers, so the stable sort of the pieces concatenated in stream order
keeps equal keys in stream order, as `heapq.merge` does. When no buffered row is below the bound, the rows equal to
it are drained stream by stream, across batches. The merger holds one batch per stream plus one round."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

KeyOf = Callable[[pa.Table], pa.Array]  # a table's sort key, one string per row (compared as UTF-8 bytes)


class _Stream:
    """The not yet merged rows of one sorted stream: a buffered batch, its keys, and its first and last key."""

    def __init__(self, batches: Iterator[pa.RecordBatch], key_of: KeyOf):
        self._batches, self._key_of = batches, key_of
        self.rows: pa.Table | None = None
        self._next_batch()

    def _next_batch(self) -> None:
        self.rows = None
        for batch in self._batches:
            if batch.num_rows:
                self._set(pa.Table.from_batches([batch]), None)
                return

    def _set(self, rows: pa.Table, keys: pa.Array | None) -> None:
        self.rows = rows
        self.keys = self._key_of(rows) if keys is None else keys
        self.first, self.last = self.keys[0].as_py(), self.keys[-1].as_py()

    def take_below(self, bound: str) -> pa.Table:
        """Removes and returns the buffered rows with key < bound (a prefix: the stream is sorted)."""
        return self._take(pc.sum(pc.less(self.keys, bound)).as_py() or 0)

    def take_equal(self, bound: str) -> list[pa.Table]:
        """Removes and returns the rows with key == bound, the smallest key left, over as many batches as hold it."""
        pieces = []
        while self.rows is not None and self.first == bound:
            pieces.append(self._take(pc.sum(pc.equal(self.keys, bound)).as_py()))
        return pieces

    def _take(self, n: int) -> pa.Table:
        head = self.rows.slice(0, n)
        if n == self.rows.num_rows:
            self._next_batch()
        elif n:
            self._set(self.rows.slice(n), self.keys.slice(n))
        return head


def merge_sorted(streams: Iterable[Iterator[pa.RecordBatch]], key_of: KeyOf) -> Iterator[pa.Table]:
    """Tables whose concatenation is the merge of the streams (each sorted by key_of), in key order."""
    live = [s for s in (_Stream(b, key_of) for b in streams) if s.rows is not None]
    while live:
        bound = min(s.last for s in live)
        pieces = [s.take_below(bound) for s in live if s.first < bound]
        if pieces:
            merged = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
            yield merged.take(pc.sort_indices(key_of(merged))) if len(pieces) > 1 else merged
        else:
            yield pa.concat_tables([p for s in live for p in s.take_equal(bound)])
        live = [s for s in live if s.rows is not None]


def joined_key(*columns: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One string key that sorts like the tuple of string columns: joined with NUL, which sorts below every other
    character and does not occur in them."""
    key = pc.binary_join_element_wise(*columns, "\x00")
    return key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key
