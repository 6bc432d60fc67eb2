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
    reject_counts: Counter = field(default_factory=Counter)  # (task, reason) -> rejected outputs
    # per group of shards, its two payloads (ObjectRefs under Ray, which the driver never fetches; the values
    # without Ray), apart so that a task fetches only the one it reads: its piece of the row lookup (ROW_LOOKUP) the
    # mixture checks take, and its per-video counts (VIDEO_PAYLOAD) the stats/videos rows take
    lookups: list = field(default_factory=list)
    videos: list = field(default_factory=list)


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
# Per-video counts of a group of shards: "task_counts" (video_id, task, rows), "reject_video_counts" (video_id, rows)
# and "random_videos" (the video_ids with a random-weight row).
VIDEO_PAYLOAD = dict


def _tasks(table: str, rows: pa.Table) -> pa.Array:
    """The mixture task of every row of an annotation table."""
    n = rows.num_rows
    if table == "captions":
        is_video = pc.fill_null(pc.equal(rows["level"], "video"), False)
        return pc.if_else(is_video, SUMMARY_TASK, CAPTION_TASK)
    if table == "qa":
        return rows["family"]
    return pa.array([GROUNDING_TASK] * n, pa.string()) if n else pa.array([], pa.string())


def read_annotations(out: BuildOutput, keys, mismatches: list[str],
                     tasks_in_flight: int | None = None) -> Annotations:
    """Counts per video and task, computed with Arrow in Ray tasks over groups of shards (`read_shard_group`): the
    driver lists the four annotation folders and gets back the reject counts and messages; the per-row lookup the
    mixture checks need and the per-video counts stay in the object store. `keys`: manifest/videos.parquet's
    video_id (and duration_s) table, an ObjectRef under Ray."""
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
    for found, (lookup, videos) in remote.imap_with_payload("stats", read_shard_group, groups,
                                                            (out.root, storage.settings(), keys), "annotation shards",
                                                            total=-(-len(stems) // size), in_flight=tasks_in_flight,
                                                            payloads=2):
        ann.reject_counts.update(dict(found["reject_counts"]))
        ann.lookups.append(lookup)
        ann.videos.append(videos)
        file_messages += found["file_messages"]
        record_messages += found["record_messages"]
    mismatches += [m for *_, m in sorted(file_messages)] + [m for _, m in sorted(record_messages)]
    return ann


def read_shard_group(group: tuple, root: str, settings, keys: pa.Table) -> tuple[dict, dict, dict]:
    """One group of shards: (reject counts and messages for the driver; payloads: this group's piece of the row
    lookup, its per-video counts, spooled under Ray). `group` holds (shard stem, {table: relative path of its
    Parquet file}); each shard's rows are checked against its record."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    accepted = keys["video_id"]
    task_counts, reject_video_counts, random_videos = [], [], []
    reject_counts: Counter = Counter()
    file_messages, record_messages = [], []
    lookup: dict = {}
    read: list[tuple] = []  # (table, path, video_ids) of every file, checked against the manifest at the end
    for stem, paths in group:
        counts: Counter = Counter()
        for table, path in sorted(paths.items(), key=lambda item: TABLE_ORDER.index(item[0])):
            rows = out.read_table(path, columns=ANNOTATION_COLUMNS[table]).combine_chunks()
            counts[table] += rows.num_rows
            videos = rows["video_id"]
            read.append((table, path, videos))
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
    file_messages += _unknown_video_messages(read, accepted)
    per_video = {
        "task_counts": pa.concat_tables(task_counts) if task_counts else TASK_COUNTS.empty_table(),
        "reject_video_counts": (pa.concat_tables(reject_video_counts) if reject_video_counts else
                                VIDEO_COUNTS.empty_table()),
        "random_videos": (pc.unique(pa.chunked_array(random_videos, pa.string())) if random_videos else
                          pa.array([], pa.string())),
    }
    summary = {"reject_counts": sorted(reject_counts.items()), "file_messages": file_messages,
               "record_messages": record_messages}
    spooled = remote.spool(per_video, out.uri(layout.stats_spool_path("annotation-videos", group[0][0])))
    return summary, lookup, spooled


def _unknown_video_messages(read: list[tuple], accepted: pa.Array) -> list[tuple]:
    """(table order, path, message) for each (table, path, video_ids) holding videos not in `accepted`: one
    lookup of all the files' ids (the manifest's ids hashed once per group of shards, not once per file)."""
    if not read:
        return []
    known = pc.is_in(pa.chunked_array([videos for *_, videos in read], pa.string()), value_set=accepted)
    messages, start = [], 0
    for table, path, videos in read:
        mine = known.slice(start, len(videos))
        start += len(videos)
        unknown = pc.unique(pc.filter(videos, pc.invert(mine))).to_pylist()
        if unknown:
            messages.append((TABLE_ORDER.index(table), path, (
                f"{path}: {len(unknown)} videos are not in manifest/videos.parquet (e.g. "
                f"{sorted(unknown)[:stats_schema.EXAMPLES]}; rerun the `annotate` stage)")))
    return messages


@dataclass
class Hico:
    stages: list[str] = field(default_factory=list)  # stages with an index, hico/<stage>/index.parquet
    random_videos: list = field(default_factory=list)  # per group of records, the video_ids of random-weight ones
    unknown: list = field(default_factory=list)  # per stage, the indexed video_ids not in the manifest


def read_hico(out: BuildOutput, keys, mismatches: list[str], tasks_in_flight: int | None = None) -> Hico:
    """Per HiCo stage: its index checked against the manifest and its records (`check_hico_index`, one Ray task),
    the records read in groups (`read_hico_records`), whose random-weight video_ids they spool for the stats/videos
    rows. The clips per video are read from the index by the stats/videos rows themselves."""
    hico = Hico(stages=out.hico_stages())
    indexes = [remote.call(check_hico_index, stage, out.root, storage.settings(), keys) for stage in hico.stages]
    for stage, index in zip(hico.stages, indexes):
        records_dir = layout.hico_records_dir(stage)
        names = out.listing(records_dir).files
        size = stats_schema.STATS_SHARDS_PER_TASK
        groups = ([f"{records_dir}/{n}" for n in names[i:i + size]] for i in range(0, len(names), size))
        recorded = 0
        for found, random_videos in remote.imap_with_payload("stats", read_hico_records, groups,
                                                             (stage, out.root, storage.settings()), "HiCo records",
                                                             total=-(-len(names) // size), in_flight=tasks_in_flight):
            recorded += found["clips"]
            hico.random_videos.append(random_videos)
        index = remote.get(index)
        hico.unknown.append(index["unknown"])
        if names and recorded != index["indexed"]:
            mismatches.append(f"{layout.hico_index_path(stage)} lists {index['indexed']} clips but the records in "
                              f"{records_dir}/ hold {recorded} (rerun the `hico` stage)")
    if not any(len(u) for u in hico.unknown):
        hico.unknown = []
    return hico


HICO_INDEX_COLUMNS = ["video_id", "num_rows"]


def check_hico_index(stage: str, root: str, settings, keys: pa.Table) -> dict:
    """A HiCo stage's index: its clips in all and its video_ids missing from the manifest (`keys`)."""
    storage.configure(**dataclasses.asdict(settings))
    index = BuildOutput(root).read_table(layout.hico_index_path(stage), columns=HICO_INDEX_COLUMNS)
    ids = index["video_id"]
    unknown = pc.unique(pc.filter(ids, pc.invert(pc.is_in(ids, value_set=keys["video_id"]))))
    return {"indexed": pc.sum(index["num_rows"]).as_py() or 0,
            "unknown": unknown.combine_chunks() if isinstance(unknown, pa.ChunkedArray) else unknown}


def read_hico_records(paths: list[str], stage: str, root: str, settings) -> tuple[dict, pa.Array]:
    """HiCo records of `stage`: (their clips; payload: the video_ids of the random-weight ones, spooled under
    Ray)."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    clips, random_videos = 0, []
    for path in paths:
        record = out.read_json(path)
        clips += record.get("clips", 0)
        if record.get("random_init"):
            random_videos.append(pa.array([s["video_id"] for s in record.get("segments", [])], pa.string()))
    random_videos = pa.concat_arrays(random_videos) if random_videos else pa.array([], pa.string())
    first = paths[0].rsplit("/", 1)[-1].removesuffix(".json")  # the group's first record, <shard stem>.json
    spooled = remote.spool(random_videos, out.uri(layout.stats_spool_path("hico-random", f"{stage}/{first}")))
    return {"clips": clips}, spooled
