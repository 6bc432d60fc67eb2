"""stats/videos.parquet as a columnar aggregation, computed by Ray tasks over runs of manifest/videos.parquet rows
(which are in video_id order): each task reads its videos' manifest rows and joins them with the per-video counts
the other checks left in the object store (annotation counts, HiCo clips, stage tags, shard membership), as long
Arrow tables (video_id, key, value) filtered to its videos. The driver writes the rows as they arrive, in order, in
row groups of a fixed size, to a local spool file: it holds the rows of the tasks in flight and of one row group,
never a column of the whole build. No Python object is made per video: per-video maps and lists are built from
offsets computed with numpy."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import weakref
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from compressors.row_groups import RowGroupWriter
from pipeline.io import storage
from pipeline.stats import remote
from pipeline.stats.inputs import first_sorted
from pipeline.stats.sources import BuildOutput, arrow_s3_operation
from schemas import layout
from schemas import stats as stats_schema
from schemas.errors import LongVidError
from schemas.mixture import CAPTION_TASK, GROUNDING_TASK, SUMMARY_TASK


def frames_per_stage(sampling: pa.ChunkedArray) -> pa.ChunkedArray:
    """(stage -> sampled frames) of every video, in plan order, as an Arrow map column; a missing plan list is an
    empty map. Only list lengths are read: the frame lists never become Python objects."""
    chunks = []
    for chunk in sampling.chunks:
        lengths = pc.fill_null(pc.list_value_length(chunk), 0).to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32)
        flat = pc.list_flatten(chunk)
        frames = pc.list_value_length(flat.field("frame_indices")).cast(pa.int32())
        chunks.append(pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), flat.field("stage"), frames))
    return pa.chunked_array(chunks, pa.map_(pa.string(), pa.int32()))




def _video_columns(rows: pa.Table, copied: list[str]) -> pa.Table:
    return rows.select(copied).append_column(
        "scenes", pc.list_value_length(rows["scenes"]).cast(pa.int32())).append_column(
        "frames_per_stage", frames_per_stage(rows["sampling"]))


def read_manifest_videos(out: BuildOutput, start: int = 0, stop: int | None = None) -> pa.Table:
    """Rows `start` to `stop` of manifest/videos.parquet (all by default): its copied columns plus `scenes` (count)
    and `frames_per_stage` (map), read in batches of rows from the row groups holding them, so that the scene and
    frame lists of more rows are never in memory at once."""
    filesystem, path_of = out.arrow_filesystem()
    copied = list(stats_schema.VIDEO_COPIED_COLUMNS)
    parquet = pq.ParquetFile(filesystem.open_input_file(path_of(layout.MANIFEST_VIDEOS)))
    stop = parquet.metadata.num_rows if stop is None else stop
    groups, first, position = [], None, 0
    for i in range(parquet.num_row_groups):
        n = parquet.metadata.row_group(i).num_rows
        if position < stop and position + n > start:
            groups.append(i)
            first = position if first is None else first
        position += n
    tables, position = [], first or 0
    batches = parquet.iter_batches(layout.MANIFEST_BATCH_ROWS, row_groups=groups, columns=[*copied, "scenes",
                                                                                            "sampling"]) \
        if groups else ()
    for batch in batches:
        begin, end = max(start - position, 0), min(stop - position, batch.num_rows)
        position += batch.num_rows
        if end > begin:
            tables.append(_video_columns(pa.Table.from_batches([batch]).slice(begin, end - begin), copied))
    if not tables:
        empty = parquet.schema_arrow.empty_table()
        tables.append(empty.select(copied).append_column("scenes", pa.array([], pa.int32())).append_column(
            "frames_per_stage", pa.array([], pa.map_(pa.string(), pa.int32()))))
    return pa.concat_tables(tables).combine_chunks()


def _positions(video_ids: pa.Array, ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(row index into `video_ids` of each of `ids`, which of `ids` are kept): rows of videos outside the table
    are dropped."""
    pos = pc.index_in(ids, value_set=video_ids)
    keep = pc.is_valid(pos).to_numpy(zero_copy_only=False)
    return pos.to_numpy(zero_copy_only=False)[keep].astype(np.int64), keep


def _offsets(positions: np.ndarray, n: int) -> pa.Array:
    counts = np.bincount(positions, minlength=n)
    return pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32), pa.int32())


def _sorted_long(long: pa.Table, key: str) -> pa.Table:
    return long.sort_by([("video_id", "ascending"), (key, "ascending")])


def map_column(video_ids: pa.Array, long: pa.Table, key: str, value: str, value_type: pa.DataType) -> pa.Array:
    """Per video of `video_ids` (sorted, unique): a map key -> value from `long` (one row per video and key), keys
    sorted; an empty map for a video without rows."""
    long = _sorted_long(long, key)
    pos, keep = _positions(video_ids, long["video_id"])
    keys = pc.filter(long[key], keep).combine_chunks() if len(long) else pa.array([], pa.string())
    values = pc.filter(long[value], keep).cast(value_type).combine_chunks() if len(long) else \
        pa.array([], value_type)
    return pa.MapArray.from_arrays(_offsets(pos, len(video_ids)), keys, values)


def list_column(video_ids: pa.Array, long: pa.Table, key: str) -> pa.Array:
    """Per video: the sorted list of `key` values of its rows in `long` (one row per video and value)."""
    long = _sorted_long(long, key)
    pos, keep = _positions(video_ids, long["video_id"])
    values = pc.filter(long[key], keep).combine_chunks() if len(long) else pa.array([], pa.string())
    return pa.ListArray.from_arrays(_offsets(pos, len(video_ids)), values)


def sum_per_video(video_ids: pa.Array, long: pa.Table, value: str) -> pa.Array:
    """Per video: the sum of `value` over its rows in `long` (0 without rows)."""
    pos, keep = _positions(video_ids, long["video_id"])
    weights = pc.filter(long[value], keep).to_numpy() if len(long) else np.zeros(0)
    return pa.array(np.bincount(pos, weights=weights, minlength=len(video_ids)).astype(np.int64), pa.int64())


def scenes_per_minute(scenes: pa.Array, durations: pa.Array) -> pa.Array:
    """scenes / minutes rounded to 6 places (Python's correctly rounded `round`, as the tables always used); null
    without a scene count or a positive duration."""
    durations = pc.fill_null(durations, 0.0)
    step = 65536  # Python floats for one slice of videos at a time, not the whole build
    return pa.concat_arrays([pa.array(
        [round(s / (d / 60), 6) if s is not None and d > 0 else None
         for s, d in zip(scenes.slice(i, step).to_pylist(), durations.slice(i, step).to_pylist())], pa.float64())
        for i in range(0, len(scenes), step)] or [pa.array([], pa.float64())])


def _long(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables]) if tables else schema.empty_table()


TASK_COUNTS = pa.schema([("video_id", pa.string()), ("task", pa.string()), ("rows", pa.int64())])
VIDEO_COUNTS = pa.schema([("video_id", pa.string()), ("rows", pa.int64())])
HICO_CLIPS = pa.schema([("video_id", pa.string()), ("stage", pa.string()), ("rows", pa.int64())])
STAGE_TAGS = pa.schema([("video_id", pa.string()), ("stage", pa.string())])


def build(videos: pa.Table, task_counts: list[pa.Table], reject_counts: list[pa.Table], hico_clips: list[pa.Table],
          stage_tags: list[pa.Table], random_ids: list[pa.Array]) -> pa.Table:
    """stats/videos.parquet. `videos`: the copied manifest columns plus `scenes` (int) and `frames_per_stage`
    (map), any order; the other arguments are long tables of per-file counts (summed here) and the ids of videos
    with a random-weight annotation or HiCo row."""
    videos = videos.take(pc.sort_indices(videos["video_id"]))
    ids = videos["video_id"].combine_chunks()
    tasks = _long(task_counts, TASK_COUNTS).group_by(["video_id", "task"], use_threads=False).aggregate(
        [("rows", "sum")]).rename_columns({"rows_sum": "rows"})
    is_task = {name: pc.equal(tasks["task"], name) for name in (CAPTION_TASK, SUMMARY_TASK, GROUNDING_TASK)}
    captions = tasks.filter(pc.or_(is_task[CAPTION_TASK], is_task[SUMMARY_TASK]))
    qa = tasks.filter(pc.invert(pc.or_(pc.or_(is_task[CAPTION_TASK], is_task[SUMMARY_TASK]), is_task[GROUNDING_TASK])))
    clips = _long(hico_clips, HICO_CLIPS).group_by(["video_id", "stage"], use_threads=False).aggregate(
        [("rows", "sum")]).rename_columns({"rows_sum": "rows"})
    tags = _long(stage_tags, STAGE_TAGS).group_by(["video_id", "stage"], use_threads=False).aggregate([])
    random = pc.unique(pa.chunked_array(random_ids, pa.string())) if random_ids else pa.array([], pa.string())
    columns = {name: videos[name] for name in stats_schema.VIDEO_COPIED_COLUMNS}
    columns.update({
        "scenes": videos["scenes"],
        "scenes_per_minute": scenes_per_minute(videos["scenes"].combine_chunks(),
                                               videos["duration_s"].combine_chunks()),
        "frames_per_stage": videos["frames_per_stage"],
        "annotations_per_task": map_column(ids, tasks, "task", "rows", pa.int64()),
        "captions": sum_per_video(ids, captions, "rows"),
        "qa": sum_per_video(ids, qa, "rows"),
        "grounding": sum_per_video(ids, tasks.filter(is_task[GROUNDING_TASK]), "rows"),
        "annotation_rejects": sum_per_video(ids, _long(reject_counts, VIDEO_COUNTS), "rows"),
        "stage_tags": list_column(ids, tags, "stage"),
        "hico_clips": map_column(ids, clips, "stage", "rows", pa.int32()),
        "random_init": pc.is_in(ids, value_set=random),
    })
    return pa.table({f.name: columns[f.name] for f in stats_schema.VIDEOS}).cast(stats_schema.VIDEOS)


# ---------------------------------------------------------------------------------------------------------------
# stats/videos.parquet by groups of manifest rows


@dataclass(frozen=True)
class Sources:
    """What the other checks left for the per-video rows: ObjectRefs under Ray (fetched by the tasks, never by the
    driver), the values themselves without Ray."""
    annotations: list  # per group of annotation shards, its per-video counts (stats/annotations.py VIDEO_PAYLOAD)
    hico_stages: list[str]  # HiCo stages with an index (their clips per video are read from it)
    hico_random: list  # arrays of the video_ids of random-weight HiCo records
    in_shards: list  # per group of shards, its (video_id, in_shard) table from the shard records
    stage_tags: list  # (curriculum stage, [the distinct video_ids of each of its tasks])
    shard_index_missing: bool


@dataclass
class VideosFile:
    """stats/videos.parquet spooled to a local file, and what the driver learnt of the rows on the way: the videos
    naming a shard, and those whose shard the manifest and the shard records disagree on (with the first sorted)."""
    path: str
    rows: int = 0
    claimed: int = 0
    wrong_shard: int = 0
    wrong_shard_examples: list = field(default_factory=list)

    def read(self) -> pa.Table:
        return pq.read_table(self.path)


def build_file(out: BuildOutput, sources: Sources, tasks_in_flight: int | None = None) -> VideosFile:
    """stats/videos.parquet of the build, computed by Ray tasks over STATS_VIDEOS_PER_TASK manifest rows at a time
    (`group_rows`) and written in row groups of STATS_VIDEOS_ROWS_PER_GROUP rows to a local spool file, removed
    when the returned VideosFile is dropped. Raises ManifestOrder when the manifest is not in video_id order (the
    tasks' runs of rows would not join up in order)."""
    from pipeline.core import tempdirs

    with arrow_s3_operation("GetObject", out.uri(layout.MANIFEST_VIDEOS)):
        total = out.open_parquet(layout.MANIFEST_VIDEOS).metadata.num_rows
    size = stats_schema.STATS_VIDEOS_PER_TASK
    spans = ((i, min(i + size, total)) for i in range(0, total, size))
    fd, path = tempdirs.mkstemp(prefix="longvid-stats-videos-", suffix=".parquet")
    os.close(fd)
    result = VideosFile(path)
    weakref.finalize(result, _remove, path)
    last = None
    with RowGroupWriter(path, stats_schema.VIDEOS, stats_schema.STATS_VIDEOS_ROWS_PER_GROUP) as writer:
        results = remote.imap_with_payload("stats", group_rows, spans, (out.root, storage.settings(), sources),
                                           "video rows", total=-(-total // size), in_flight=tasks_in_flight)
        with contextlib.closing(results):  # closed on ManifestOrder: no task spools after the cleanup
            for found, _ in results:
                rows = remote.get(found["rows"])  # read from the task's spooled file: heap pages, handed back below
                if rows.num_rows:
                    first = rows["video_id"][0].as_py()
                    if last is not None and first <= last:
                        raise ManifestOrder(f"{layout.MANIFEST_VIDEOS} is not in video_id order ({first!r} after "
                                            f"{last!r}): rerun the `shard` stage")
                    last = rows["video_id"][-1].as_py()
                writer.add(rows)
                result.rows += rows.num_rows
                del rows
                pa.default_memory_pool().release_unused()
                result.claimed += found["claimed"]
                result.wrong_shard += found["wrong_shard"]
                result.wrong_shard_examples = sorted(result.wrong_shard_examples +
                                                     found["wrong_shard_examples"])[:stats_schema.EXAMPLES]
    return result


class ManifestOrder(LongVidError, RuntimeError):
    """manifest/videos.parquet is not in video_id order, which the `shard` stage guarantees."""


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def _in(table: pa.Table, ids: pa.Array) -> pa.Table:
    return table.filter(pc.is_in(table["video_id"], value_set=ids))


def _among(values: pa.Array | pa.ChunkedArray, ids: pa.Array) -> pa.Array:
    return pc.filter(values, pc.is_in(values, value_set=ids))


def group_rows(span: tuple[int, int], root: str, settings, sources: Sources) -> tuple[dict, None]:
    """stats/videos.parquet rows of manifest rows span[0] to span[1] (in video_id order), with how many of them name
    a shard and which disagree with the shard records on it (the rows spooled under Ray); no payload."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    with arrow_s3_operation("GetObject", out.uri(layout.MANIFEST_VIDEOS)):
        videos = read_manifest_videos(out, *span)
    ids = videos["video_id"].combine_chunks()
    annotations = [remote.get(p) for p in sources.annotations]
    hico_clips = []
    for stage in sources.hico_stages:
        index = _in(out.read_table(layout.hico_index_path(stage), columns=["video_id", "num_rows"]), ids)
        hico_clips.append(pa.table({"video_id": index["video_id"], "stage": pa.array([stage] * index.num_rows,
                                                                                    pa.string()),
                                    "rows": index["num_rows"]}))
    stage_tags = []
    for stage, task_videos in sources.stage_tags:
        tagged = [_among(remote.get(v), ids) for v in task_videos]
        tagged = pc.unique(pa.chunked_array(tagged, pa.string())) if tagged else pa.array([], pa.string())
        stage_tags.append(pa.table({"video_id": tagged, "stage": pa.array([stage] * len(tagged), pa.string())}))
    random_ids = [_among(a["random_videos"], ids) for a in annotations] + \
        [_among(remote.get(r), ids) for r in sources.hico_random]
    rows = build(videos, [_in(a["task_counts"], ids) for a in annotations],
                 [_in(a["reject_video_counts"], ids) for a in annotations], hico_clips, stage_tags, random_ids)
    # Spooled rather than returned: the driver would read them in place from the object store, whose pages stay in
    # its RSS (measured: 13 -> 22 MiB from F = 0.25 to 1.0)
    spooled = remote.spool(rows, out.uri(layout.stats_spool_path("videos", f"{span[0]:012d}")))
    found = {"rows": spooled, "claimed": 0, "wrong_shard": 0, "wrong_shard_examples": []}
    claimed = videos.filter(pc.fill_null(pc.not_equal(videos["shard"], ""), False)).select(["video_id", "shard"])
    found["claimed"] = claimed.num_rows
    if not sources.shard_index_missing:
        recorded = [_in(remote.get(t), ids) for t in sources.in_shards]
        recorded = pa.concat_tables(recorded) if recorded else pa.table(
            {"video_id": pa.array([], pa.string()), "in_shard": pa.array([], pa.string())})
        both = claimed.join(recorded, "video_id", join_type="full outer")
        wrong = pc.unique(pc.filter(both["video_id"], pc.invert(
            pc.fill_null(pc.equal(both["shard"], both["in_shard"]), False))))
        found["wrong_shard"] = len(wrong)
        found["wrong_shard_examples"] = first_sorted(wrong)
    return found, None
