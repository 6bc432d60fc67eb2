"""Hash buckets of string ids that every process computes alike (Python's own `hash` of a str is salted per
process), vectorised over an Arrow string array's bytes: how the stats checks exchange record ids between the parts
of one (curriculum stage, task)."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_BASE = np.uint64(0x100000001B3)  # FNV-1 64-bit prime, as the polynomial base
_MIX = np.uint64(0xFF51AFD7ED558CCD)  # a 64-bit finaliser constant (MurmurHash3's fmix64)


HASH_CHUNK = 16384  # strings hashed at a time: the temporaries take about 50 bytes per byte of a chunk's strings


def _string_hashes(values: pa.Array) -> np.ndarray:
    """sum(byte[i] * BASE^(len-1-i)) mod 2^64 of each string's UTF-8 bytes, then mixed; null counts as ''."""
    values = pc.fill_null(values, "").cast(pa.large_string())
    if len(values) <= HASH_CHUNK:
        return _chunk_hashes(values)
    return np.concatenate([_chunk_hashes(values.slice(i, HASH_CHUNK)) for i in range(0, len(values), HASH_CHUNK)])


def _chunk_hashes(values: pa.Array) -> np.ndarray:
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset:values.offset + n + 1]
    data = values.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]] if data is not None and n else \
        np.zeros(0, np.uint8)
    ends = offsets[1:] - offsets[0]
    lengths = np.diff(offsets)
    longest = int(lengths.max()) if n else 0
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.concatenate([[np.uint64(1)], np.full(max(longest - 1, 0), _BASE, np.uint64)]),
                            dtype=np.uint64) if longest else np.zeros(0, np.uint64)
        owner = np.repeat(np.arange(n), lengths)
        from_end = ends[owner] - 1 - np.arange(len(raw))
        weighted = raw.astype(np.uint64) * powers[from_end]
        cumulative = np.concatenate([[np.uint64(0)], np.cumsum(weighted, dtype=np.uint64)])
        h = cumulative[ends] - cumulative[ends - lengths]
        h ^= h >> np.uint64(33)
        h *= _MIX
        h ^= h >> np.uint64(33)
    return h


def bucket_of(values: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """The bucket in [0, buckets) of each value, a function of its bytes only."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if buckets <= 1:
        return np.zeros(len(values), np.int64)
    return (_string_hashes(values) % np.uint64(buckets)).astype(np.int64)


def split(table_or_array, key: pa.Array | pa.ChunkedArray, buckets: int) -> list:
    """`table_or_array` cut into `buckets` pieces by the bucket of `key` (row order kept within each piece)."""
    if buckets <= 1:
        return [table_or_array]
    which = bucket_of(key, buckets)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(buckets + 1))
    # a take per bucket, not slices of one take: a slice pickles (into Ray's object store) its whole buffers
    return [table_or_array.take(pa.array(order[a:b])) for a, b in itertools.pairwise(bounds)]
