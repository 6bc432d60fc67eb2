"""Everything the report shows, read from a build's output folder: the stats tables (computed on the fly when the
`stats` stage has not run), the summary, annotation lengths and random-weight row counts, the gallery's videos with
their frames, captions and QA."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipeline.report import aggregate
from pipeline.report import gallery as report_gallery
from pipeline.report.annotations import (
    AnnotationFacts,
    hico_random_stages,
    read_annotations,
)
from pipeline.stats import summary as stats_summary
from pipeline.stats import tables as stats
from pipeline.stats.sources import BuildOutput
from schemas import layout
from schemas.config import ReportConfig


@dataclass
class ReportData:
    out: BuildOutput
    cfg: ReportConfig
    summary: dict
    tables: dict[str, pa.Table]  # the small stats tables: rejects and stages
    videos: aggregate.VideoFacts  # the stats videos table, reduced
    stats_note: str | None  # set when the stats tables were computed for the report or are stale
    mismatches: list[str]
    mixtures_built: bool
    facts: AnnotationFacts
    hico_random: list[str]  # stages whose tokens came from a random-weight encoder
    gallery: list[report_gallery.GalleryVideo]


SMALL_TABLES = ("rejects", "stages")  # the stats tables the report reads whole (a row per reason, per task)


def collect(out: BuildOutput, cfg: ReportConfig) -> ReportData:
    paths = {name: layout.stats_table_path(name) for name in layout.STATS_TABLES}
    written = all(out.exists(p) for p in paths.values())
    mismatches, note = [], None
    if written:
        tables = {name: out.read_table(paths[name]) for name in SMALL_TABLES}
        videos = aggregate.parquet_batches(out, paths["videos"])
    else:
        computed = stats.compute(out)
        tables, mismatches = computed.tables, computed.mismatches
        videos = aggregate.table_batches(tables.pop("videos"))
        note = "The `stats` stage has not run on this build: the tables below were computed for this report."
    summary = stats_summary.read(out)
    section = summary.get("stats")
    if written and isinstance(section, dict) and not section.get("up_to_date", True):
        note = section.get("note")
    video_facts = aggregate.videos(videos, cfg.histogram_bins)
    chosen = report_gallery.pick_from_batches(aggregate.parquet_batches(out, layout.MANIFEST_VIDEOS),
                                              cfg.gallery_videos, cfg.seed)
    facts = read_annotations(out, [v["video_id"] for v in chosen])
    gallery = report_gallery.load(out, chosen, cfg.gallery_frames)
    hico_random = hico_random_stages(out)
    return ReportData(out, cfg, summary, tables, video_facts, note, mismatches, bool(out.mixture_stages()), facts,
                      hico_random, gallery)
