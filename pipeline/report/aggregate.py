"""The stats videos table (one row per video) reduced to what the report prints and draws, a batch at a time and only
the columns it needs: sums, per-key totals of the map columns, value counts, and the two histograms (a first pass
finds their ranges, a second counts). The driver holds no row per video; the figures are those of the whole table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.report import plots as report_plots
from pipeline.stats import summary as stats_summary
from pipeline.stats.sources import BuildOutput
from schemas import stats as stats_schema

TOTALS = ("captions", "qa", "grounding", "annotation_rejects")
MAPS = ("hico_clips", "annotations_per_task")
COUNTED = {"sizes": ["width", "height"], "fps": ["fps"], "codecs": ["codec"], "containers": ["container"]}
COLUMNS = ["duration_s", "scenes_per_minute", *TOTALS, *MAPS, *dict.fromkeys(c for cs in COUNTED.values() for c in cs)]

Batches = Callable[[list[str]], Iterator[pa.Table]]  # batches(columns): a table's rows, those columns, in batches


def parquet_batches(out: BuildOutput, relative: str) -> Batches:
    """A Parquet file of the build read `TABLE_BATCH_ROWS` rows at a time (BuildOutput.batches: a row group after the
    other, freed pages handed back after each)."""
    def batches(columns: list[str]) -> Iterator[pa.Table]:
        for batch in out.batches(relative, columns, stats_schema.TABLE_BATCH_ROWS):
            yield pa.Table.from_batches([batch])

    return batches


def table_batches(table: pa.Table) -> Batches:
    """A table in memory (the stats tables computed for the report) read as `parquet_batches` reads a file."""
    def batches(columns: list[str]) -> Iterator[pa.Table]:
        for batch in table.select(columns).to_batches(stats_schema.TABLE_BATCH_ROWS):
            yield pa.Table.from_batches([batch])

    return batches


@dataclass
class VideoFacts:
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOTALS, 0))
    maps: dict[str, dict[str, int]] = field(default_factory=dict)  # map column -> {key: summed values}, by key
    counts: dict[str, dict] = field(default_factory=dict)  # COUNTED name -> {value: videos}, in first-seen order
    duration: report_plots.Histogram = field(default_factory=report_plots.Histogram)  # positive durations (s)
    scenes_per_minute: report_plots.Histogram = field(default_factory=report_plots.Histogram)


def value_counts(table: pa.Table, columns: list[str]) -> dict:
    """{value (a tuple for several columns): rows} in the order each value first appears, nulls as None: counting
    these into a Counter gives the Counter of the per-row values (same counts, same insertion order)."""
    counts = table.select(columns).group_by(columns, use_threads=False).aggregate([([], "count_all")])
    keys = [counts[c].to_pylist() for c in columns]
    values = list(zip(*keys)) if len(columns) > 1 else keys[0]
    return dict(zip(values, counts["count_all"].to_pylist()))


def _durations(t: pa.Table) -> np.ndarray:
    values = _floats(t["duration_s"])
    return values[values > 0]


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """The non-null values of a numeric column."""
    return pc.drop_null(column).to_numpy().astype(float)


@dataclass
class _Range:
    lo: float | None = None
    hi: float | None = None

    def add(self, values: np.ndarray) -> None:
        if values.size:
            self.lo = values.min() if self.lo is None else min(self.lo, values.min())
            self.hi = values.max() if self.hi is None else max(self.hi, values.max())

    def ends(self) -> np.ndarray | None:
        return None if self.lo is None else np.array([self.lo, self.hi])


def videos(batches: Batches, bins: int) -> VideoFacts:
    """The facts of the stats videos table; `bins`: the histograms' bins (log-spaced for durations, by
    report_plots.log_bins; numpy's equal-width bins over the range for scenes per minute, as ax.hist draws them)."""
    facts = VideoFacts(counts={name: {} for name in COUNTED})
    maps = {name: Counter() for name in MAPS}
    duration, scenes = _Range(), _Range()
    for t in batches(COLUMNS):
        for name in TOTALS:
            facts.totals[name] += pc.sum(t[name]).as_py() or 0
        for name in MAPS:
            maps[name].update(stats_summary._map_totals(t[name]))
        for name, columns in COUNTED.items():
            for value, n in value_counts(t, columns).items():
                facts.counts[name][value] = facts.counts[name].get(value, 0) + n
        duration.add(_durations(t))
        scenes.add(_floats(t["scenes_per_minute"]))
    facts.maps = {name: dict(sorted(maps[name].items())) for name in MAPS}
    if duration.ends() is not None:  # log_bins depends only on the smallest and the largest value
        facts.duration = report_plots.Histogram(report_plots.log_bins(duration.ends(), bins))
    if scenes.ends() is not None:
        facts.scenes_per_minute = report_plots.Histogram(np.histogram_bin_edges(scenes.ends(), bins))
    if duration.ends() is not None or scenes.ends() is not None:
        for t in batches(["duration_s", "scenes_per_minute"]):
            if facts.duration.edges.size:
                facts.duration.add(_durations(t))
            if facts.scenes_per_minute.edges.size:
                facts.scenes_per_minute.add(_floats(t["scenes_per_minute"]))
    return facts
