"""Arrow column helpers shared by the stages that stream sorted tables."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def runs(values: pa.Array | pa.ChunkedArray) -> list[tuple[object, int, int]]:
    """(value, start, stop) of each run of equal consecutive values (e.g. a shard's rows in the video_id-sorted
    manifest, a task's rows in a members table)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    if n == 0:
        return []
    changes = pc.not_equal(values.slice(1), values.slice(0, n - 1)).to_numpy(zero_copy_only=False).nonzero()[0] + 1
    bounds = [0, *changes.tolist(), n]
    return [(values[a].as_py(), a, b) for a, b in zip(bounds, bounds[1:])]
