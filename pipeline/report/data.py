"""Everything the report shows, read from a build's output folder: the stats tables (computed on the fly when the
`stats` stage has not run), the summary, annotation lengths and random-weight row counts, the gallery's videos with
their frames, captions and QA."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

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
    tables: dict[str, pa.Table]
    stats_note: str | None  # set when the stats tables were computed for the report or are stale
    mismatches: list[str]
    mixtures_built: bool
    facts: AnnotationFacts
    hico_random: list[str]  # stages whose tokens came from a random-weight encoder
    gallery: list[report_gallery.GalleryVideo]


def collect(out: BuildOutput, cfg: ReportConfig) -> ReportData:
    written = stats.load(out)
    mismatches, note = [], None
    if written is None:
        computed = stats.compute(out)
        tables, mismatches = computed.tables, computed.mismatches
        note = "The `stats` stage has not run on this build: the tables below were computed for this report."
    else:
        tables = written
    summary = stats_summary.read(out)
    section = summary.get("stats")
    if written is not None and isinstance(section, dict) and not section.get("up_to_date", True):
        note = section.get("note")
    videos = out.read_table(layout.MANIFEST_VIDEOS, columns=report_gallery.MANIFEST_COLUMNS)
    chosen = report_gallery.pick(videos, cfg.gallery_videos, cfg.seed)
    facts = read_annotations(out, [v["video_id"] for v in chosen])
    gallery = report_gallery.load(out, chosen, cfg.gallery_frames)
    hico_random = hico_random_stages(out)
    return ReportData(out, cfg, summary, tables, note, mismatches, bool(out.mixture_stages()), facts, hico_random,
                      gallery)
