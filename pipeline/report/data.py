"""Everything the report shows, read from a build's output folder: the stats tables (computed on the fly when the
`stats` stage has not run), the summary, annotation lengths and random-weight row counts, the gallery's videos with
their frames, captions and QA."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.report import gallery as report_gallery
from pipeline.stats import summary as stats_summary
from pipeline.stats import tables as stats
from pipeline.stats.sources import BuildOutput
from schemas import layout
from schemas.config import ReportConfig


@dataclass
class AnnotationFacts:
    lengths: dict[str, list[int]] = field(default_factory=lambda: {
        "clip captions": [], "video summaries": [], "QA questions": [], "QA answers": [], "grounding queries": []})
    random_rows: Counter = field(default_factory=Counter)  # table -> rows made by random-weight models
    rows: Counter = field(default_factory=Counter)  # table -> rows
    captions: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))  # gallery videos only
    qa: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))


def _words(column: pa.ChunkedArray) -> list[int]:
    return pc.list_value_length(pc.utf8_split_whitespace(pc.fill_null(column, ""))).to_pylist()


def _read_annotations(out: BuildOutput, gallery_ids: set[str]) -> AnnotationFacts:
    facts = AnnotationFacts()
    columns = {
        "captions": ["video_id", "level", "start_s", "end_s", "text", "random_init"],
        "qa": ["video_id", "family", "form", "question", "options", "answer", "start_s", "end_s", "random_init"],
        "grounding": ["query", "random_init"],
        "rejects": ["random_init"],
    }
    wanted = pa.array(sorted(gallery_ids), pa.string())
    for table, cols in columns.items():
        for path in out.parquet_parts(layout.annotation_dir(table)):
            t = out.read_table(path, columns=cols)
            facts.rows[table] += t.num_rows
            facts.random_rows[table] += pc.sum(pc.cast(t["random_init"], pa.int64())).as_py() or 0
            if table == "captions":
                is_clip = pc.equal(t["level"], "clip")
                facts.lengths["clip captions"] += _words(t.filter(is_clip)["text"])
                facts.lengths["video summaries"] += _words(t.filter(pc.invert(is_clip))["text"])
            elif table == "qa":
                facts.lengths["QA questions"] += _words(t["question"])
                facts.lengths["QA answers"] += _words(t["answer"])
            elif table == "grounding":
                facts.lengths["grounding queries"] += _words(t["query"])
            if table in ("captions", "qa") and gallery_ids:
                for row in t.filter(pc.is_in(t["video_id"], value_set=wanted)).to_pylist():
                    getattr(facts, table)[row["video_id"]].append(row)
    return facts


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
    video_cols = ["video_id", "shard", "extension", "duration_s", "reader_num_frames", "reader_fps", "source_uri"]
    videos = out.read_table(layout.MANIFEST_VIDEOS, columns=video_cols).to_pylist()
    chosen = report_gallery.pick(videos, cfg.gallery_videos, cfg.seed)
    facts = _read_annotations(out, {v["video_id"] for v in chosen})
    gallery = report_gallery.load(out, chosen, cfg.gallery_frames)
    hico_random = sorted({stage for stage in out.hico_stages() for name in
                          out.listing(f"{layout.HICO_RECORDS_DIR}/{stage}").files
                          if out.read_json(f"{layout.HICO_RECORDS_DIR}/{stage}/{name}").get("random_init")})
    return ReportData(out, cfg, summary, tables, note, mismatches, bool(out.mixture_stages()), facts, hico_random,
                      gallery)
