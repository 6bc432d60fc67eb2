"""What the report shows of the annotation tables and the HiCo records, read in tasks over groups of shards
(ray_runtime.imap_units: Ray tasks when Ray runs, this process otherwise): the driver lists the folders and
gets back small aggregates — rows and random-weight rows per table, word counts as counts per length, the gallery
videos' caption and QA rows, whether a HiCo stage has random-weight records — never one read per shard."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import ray_runtime
from pipeline.io import storage
from pipeline.stats.sources import BuildOutput
from schemas import layout
from schemas import stats as stats_schema

# the same grouping as the stats stage's reads of these files
SHARDS_PER_TASK = stats_schema.STATS_SHARDS_PER_TASK

COLUMNS = {
    "captions": ["video_id", "level", "start_s", "end_s", "text", "random_init"],
    "qa": ["video_id", "family", "form", "question", "options", "answer", "start_s", "end_s", "random_init"],
    "grounding": ["query", "random_init"],
    "rejects": ["random_init"],
}
GALLERY_TABLES = ("captions", "qa")  # the tables whose rows the gallery shows
LENGTH_KINDS = ("clip captions", "video summaries", "QA questions", "QA answers", "grounding queries")


@dataclass
class AnnotationFacts:
    # kind (LENGTH_KINDS) -> {words: rows with that many words}
    lengths: dict[str, Counter] = field(default_factory=lambda: {kind: Counter() for kind in LENGTH_KINDS})
    random_rows: Counter = field(default_factory=Counter)  # table -> rows made by random-weight models
    rows: Counter = field(default_factory=Counter)  # table -> rows
    captions: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))  # gallery videos only
    qa: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))


def _word_counts(column: pa.ChunkedArray) -> dict[int, int]:
    lengths = pc.list_value_length(pc.utf8_split_whitespace(pc.fill_null(column, "")))
    counts = pc.value_counts(lengths)
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def read_annotations(out: BuildOutput, gallery_ids: list[str]) -> AnnotationFacts:
    """Row counts, word-count histograms and the gallery videos' rows of the four annotation tables."""
    files: dict[str, dict[str, str]] = defaultdict(dict)
    for table in COLUMNS:
        for path in out.parquet_parts(layout.annotation_dir(table)):
            files[path.rsplit("/", 1)[-1].removesuffix(".parquet")][table] = path
    stems = sorted(files)
    groups = (tuple((stem, files[stem]) for stem in stems[i:i + SHARDS_PER_TASK])
              for i in range(0, len(stems), SHARDS_PER_TASK))
    wanted = pa.array(sorted(gallery_ids), pa.string())
    facts = AnnotationFacts()
    for found in ray_runtime.imap_units("report", read_shard_group, groups, (out.root, storage.settings(), wanted),
                                        "annotation shards", -(-len(stems) // SHARDS_PER_TASK),
                                        local_without_ray=True):
        facts.rows.update(found["rows"])
        facts.random_rows.update(found["random_rows"])
        for kind, counts in found["lengths"].items():
            facts.lengths[kind].update(counts)
        for table in GALLERY_TABLES:
            for row in found[table]:
                getattr(facts, table)[row["video_id"]].append(row)
    return facts


def read_shard_group(group: tuple, root: str, settings, wanted: pa.Array) -> dict:
    """One group of shards ((stem, {table: relative path}) each): its aggregates. Each table's parts are read first
    and counted together, a few compute calls per table and group instead of per part (the calls' fixed cost was about
    a quarter of a task's time, profiled)."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    parts: dict[str, list[pa.Table]] = defaultdict(list)
    for _, paths in group:
        for table, path in paths.items():
            parts[table].append(out.read_table(path, columns=COLUMNS[table]))
    rows, random_rows = Counter(), Counter()
    lengths: dict[str, Counter] = {kind: Counter() for kind in LENGTH_KINDS}
    gallery: dict[str, list[dict]] = {table: [] for table in GALLERY_TABLES}
    for table, tables in parts.items():
        t = pa.concat_tables(tables, promote_options="default")
        rows[table] += t.num_rows
        random_rows[table] += pc.sum(pc.cast(t["random_init"], pa.int64())).as_py() or 0
        if table == "captions":
            is_clip = pc.equal(t["level"], "clip")
            lengths["clip captions"].update(_word_counts(t.filter(is_clip)["text"]))
            lengths["video summaries"].update(_word_counts(t.filter(pc.invert(is_clip))["text"]))
        elif table == "qa":
            lengths["QA questions"].update(_word_counts(t["question"]))
            lengths["QA answers"].update(_word_counts(t["answer"]))
        elif table == "grounding":
            lengths["grounding queries"].update(_word_counts(t["query"]))
        if table in GALLERY_TABLES and len(wanted):
            gallery[table] += t.filter(pc.is_in(t["video_id"], value_set=wanted)).to_pylist()
    return {"rows": rows, "random_rows": random_rows, "lengths": lengths, **gallery}


def hico_random_stages(out: BuildOutput) -> list[str]:
    """The HiCo stages with a record made by a random-weight encoder; the records are read in tasks."""
    stages = []
    for stage in out.hico_stages():
        records_dir = f"{layout.HICO_RECORDS_DIR}/{stage}"
        names = out.listing(records_dir).files
        groups = ([f"{records_dir}/{n}" for n in names[i:i + SHARDS_PER_TASK]]
                  for i in range(0, len(names), SHARDS_PER_TASK))
        found = ray_runtime.imap_units("report", any_random_record, groups, (out.root, storage.settings()),
                                       "HiCo records", -(-len(names) // SHARDS_PER_TASK), local_without_ray=True)
        if any(list(found)):
            stages.append(stage)
    return sorted(stages)


def any_random_record(paths: list[str], root: str, settings) -> bool:
    """Whether one of these HiCo records was made by a random-weight encoder."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    return any(out.read_json(path).get("random_init") for path in paths)
