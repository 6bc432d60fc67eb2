"""What the stats tables count from the model stages: annotation rows per video and task (with their rejected
outputs and random-weight rows), and HiCo clips per video and stage, each checked against its shard records."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io import storage
from pipeline.stats import remote
from pipeline.stats.sources import BuildOutput
from pipeline.stats.videos import TASK_COUNTS, VIDEO_COUNTS
from schemas import layout
from schemas import stats as stats_schema
from schemas.mixture import CAPTION_TASK, GROUNDING_TASK, SUMMARY_TASK


@dataclass
class Annotations:
    # per group of shards, Arrow tables of (video_id, task, rows) and of rejected outputs (video_id, rows); summed
    # per video by pipeline/stats/videos.py
    task_counts: list = field(default_factory=list)
    reject_video_counts: list = field(default_factory=list)
    reject_counts: Counter = field(default_factory=Counter)  # (task, reason) -> rejected outputs
    random_videos: list = field(default_factory=list)  # Arrow arrays of video_ids with a random-weight row
    # per group of shards, its piece of the row lookup (ROW_LOOKUP): under Ray an ObjectRef the driver never fetches
    # (the mixture checks take the pieces as arguments), without Ray the dict itself
    lookup: list = field(default_factory=list)


ANNOTATION_COLUMNS = {
    "captions": ["video_id", "level", "random_init"],
    "qa": ["video_id", "family", "random_init"],
    "grounding": ["video_id", "random_init"],
    "rejects": ["video_id", "task", "reason", "random_init"],
}
TABLE_ORDER = list(ANNOTATION_COLUMNS)
# A piece of the row lookup: (table, shard stem) -> (video_id of each row, dictionary-encoded; whether a random-weight
# model made each row): Arrow arrays, a few bytes per annotation row.
ROW_LOOKUP = dict


def _tasks(table: str, rows: pa.Table) -> pa.Array:
    """The mixture task of every row of an annotation table."""
    n = rows.num_rows
    if table == "captions":
        is_video = pc.fill_null(pc.equal(rows["level"], "video"), False)
        return pc.if_else(is_video, SUMMARY_TASK, CAPTION_TASK)
    if table == "qa":
        return rows["family"]
    return pa.array([GROUNDING_TASK] * n, pa.string()) if n else pa.array([], pa.string())


def read_annotations(out: BuildOutput, accepted: pa.Array, mismatches: list[str],
                     tasks_in_flight: int | None = None) -> Annotations:
    """Counts per video and task, computed with Arrow in Ray tasks over groups of shards (`read_shard_group`): the
    driver lists the four annotation folders and gets back per-group aggregates; the per-row lookup the mixture
    checks need stays in the object store."""
    files: dict[str, dict[str, str]] = defaultdict(dict)
    for table in ANNOTATION_COLUMNS:
        for path in out.parquet_parts(layout.annotation_dir(table)):
            files[layout.shard_stem(path.rsplit("/", 1)[-1].removesuffix(".parquet"))][table] = path
    stems = sorted(files)
    size = stats_schema.STATS_SHARDS_PER_TASK
    groups = (tuple((stem, files[stem]) for stem in stems[i:i + size]) for i in range(0, len(stems), size))
    ann = Annotations()
    file_messages: list[tuple] = []
    record_messages: list[tuple] = []
    for found, lookup in remote.imap_with_payload("stats", read_shard_group, groups,
                                                  (out.root, storage.settings(), accepted), "annotation shards",
                                                  total=-(-len(stems) // size), in_flight=tasks_in_flight):
        ann.task_counts.append(found["task_counts"])
        ann.reject_video_counts.append(found["reject_video_counts"])
        ann.reject_counts.update(dict(found["reject_counts"]))
        ann.random_videos.append(found["random_videos"])
        ann.lookup.append(lookup)
        file_messages += found["file_messages"]
        record_messages += found["record_messages"]
    mismatches += [m for *_, m in sorted(file_messages)] + [m for _, m in sorted(record_messages)]
    return ann


def read_shard_group(group: tuple, root: str, settings, accepted: pa.Array) -> tuple[dict, dict]:
    """One group of shards: (aggregates for the driver, this group's piece of the row lookup). `group` holds
    (shard stem, {table: relative path of its Parquet file}); each shard's rows are checked against its record."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    task_counts, reject_video_counts, random_videos = [], [], []
    reject_counts: Counter = Counter()
    file_messages, record_messages = [], []
    lookup: dict = {}
    for stem, paths in group:
        counts: Counter = Counter()
        for table, path in sorted(paths.items(), key=lambda item: TABLE_ORDER.index(item[0])):
            rows = out.read_table(path, columns=ANNOTATION_COLUMNS[table]).combine_chunks()
            counts[table] += rows.num_rows
            videos = rows["video_id"]
            unknown = pc.unique(pc.filter(videos, pc.invert(pc.is_in(videos, value_set=accepted)))).to_pylist()
            if unknown:
                file_messages.append((TABLE_ORDER.index(table), path, (
                    f"{path}: {len(unknown)} videos are not in manifest/videos.parquet (e.g. "
                    f"{sorted(unknown)[:stats_schema.EXAMPLES]}; rerun the `annotate` stage)")))
            random = pc.fill_null(rows["random_init"], False).combine_chunks() if rows.num_rows else \
                pa.array([], pa.bool_())
            random_videos.append(pc.unique(pc.filter(videos, random)))
            if table == "rejects":
                reject_video_counts.append(rows.group_by("video_id").aggregate([("video_id", "count")])
                                           .rename_columns({"video_id_count": "rows"}))
                for r in rows.group_by(["task", "reason"]).aggregate([("video_id", "count")]).to_pylist():
                    reject_counts[(r["task"], stats_schema.reason_group(r["reason"]))] += r["video_id_count"]
                continue
            lookup[(table, stem)] = (pc.dictionary_encode(videos).combine_chunks() if rows.num_rows else
                                     pa.array([], pa.string()), random)
            task_counts.append(pa.table({"video_id": videos, "task": _tasks(table, rows)}).group_by(
                ["video_id", "task"]).aggregate([("task", "count")]).rename_columns({"task_count": "rows"}))
        record_path = layout.annotation_record_path(stem)
        if not out.exists(record_path):
            continue
        recorded = {t: n for t, n in out.read_json(record_path).get("counts", {}).items() if t in ANNOTATION_COLUMNS}
        found = {t: counts.get(t, 0) for t in recorded}
        if recorded != found:
            record_messages.append((stem, f"annotations of {stem}: the tables hold {found} rows but {record_path} "
                                          f"recorded {recorded} (rerun the `annotate` stage)"))
    summary = {
        "task_counts": pa.concat_tables(task_counts) if task_counts else TASK_COUNTS.empty_table(),
        "reject_video_counts": (pa.concat_tables(reject_video_counts) if reject_video_counts else
                                VIDEO_COUNTS.empty_table()),
        "reject_counts": sorted(reject_counts.items()),
        "random_videos": (pc.unique(pa.chunked_array(random_videos, pa.string())) if random_videos else
                          pa.array([], pa.string())),
        "file_messages": file_messages,
        "record_messages": record_messages,
    }
    return summary, lookup


def read_hico(out: BuildOutput, mismatches: list[str],
              tasks_in_flight: int | None = None) -> tuple[list[pa.Table], list[pa.Array]]:
    """(per HiCo stage, a table of clips per video: video_id, stage, rows; arrays of the video_ids with
    random-weight tokens). The driver reads each stage's index and lists its records; Ray tasks read the records in
    groups (`read_hico_records`)."""
    clips: list[pa.Table] = []
    random_videos: list[pa.Array] = []
    for stage in out.hico_stages():
        index = out.read_table(layout.hico_index_path(stage), columns=["video_id", "num_rows"])
        clips.append(pa.table({"video_id": index["video_id"], "stage": pa.array([stage] * index.num_rows, pa.string()),
                               "rows": index["num_rows"]}))
        records_dir = f"{layout.HICO_RECORDS_DIR}/{stage}"
        names = out.listing(records_dir).files
        size = stats_schema.STATS_SHARDS_PER_TASK
        groups = ([f"{records_dir}/{n}" for n in names[i:i + size]] for i in range(0, len(names), size))
        recorded = 0
        for found, _ in remote.imap_with_payload("stats", read_hico_records, groups, (out.root, storage.settings()),
                                                 "HiCo records", total=-(-len(names) // size),
                                                 in_flight=tasks_in_flight):
            recorded += found["clips"]
            random_videos += found["random_videos"]
        indexed = pc.sum(index["num_rows"]).as_py() or 0
        if names and recorded != indexed:
            mismatches.append(f"{layout.hico_index_path(stage)} lists {indexed} clips but the records in "
                              f"{records_dir}/ hold {recorded} (rerun the `hico` stage)")
    return clips, random_videos


def read_hico_records(paths: list[str], root: str, settings) -> tuple[dict, None]:
    """HiCo records: (their clips, and the video_ids of the random-weight ones as Arrow arrays; no payload)."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    clips, random_videos = 0, []
    for path in paths:
        record = out.read_json(path)
        clips += record.get("clips", 0)
        if record.get("random_init"):
            random_videos.append(pa.array([s["video_id"] for s in record.get("segments", [])], pa.string()))
    return {"clips": clips, "random_videos": random_videos}, None
