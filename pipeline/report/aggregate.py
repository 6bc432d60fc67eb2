"""The stats videos table reduced with Arrow to what a plot draws (one row per video at 114k videos: no Python
object per row)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def floats(column: pa.ChunkedArray) -> np.ndarray:
    """The non-null values of a numeric column."""
    return pc.drop_null(column).to_numpy().astype(float)


def value_counts(table: pa.Table, columns: list[str]) -> dict:
    """{value (a tuple for several columns): rows} in the order each value first appears, nulls as None: counting
    these into a Counter gives the Counter of the per-row values (same counts, same insertion order)."""
    counts = table.select(columns).group_by(columns, use_threads=False).aggregate([([], "count_all")])
    keys = [counts[c].to_pylist() for c in columns]
    values = list(zip(*keys)) if len(columns) > 1 else keys[0]
    return dict(zip(values, counts["count_all"].to_pylist()))
