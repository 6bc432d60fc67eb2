"""stats/videos.parquet as a columnar aggregation: the manifest's videos sorted by video_id, joined with per-video
counts that arrive as long Arrow tables (video_id, key, value). No Python object is made per video: per-video maps
and lists are built from offsets computed with numpy, so the driver holds a few Arrow arrays however large the build."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.stats.sources import BuildOutput
from schemas import layout
from schemas import stats as stats_schema
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




def read_manifest_videos(out: BuildOutput) -> pa.Table:
    """manifest/videos.parquet's copied columns plus `scenes` (count) and `frames_per_stage` (map), read in batches
    of rows so the scene and frame lists of the whole build are never in memory at once."""
    filesystem, path_of = out.arrow_filesystem()
    copied = list(stats_schema.VIDEO_COPIED_COLUMNS)
    parquet = pq.ParquetFile(filesystem.open_input_file(path_of(layout.MANIFEST_VIDEOS)))
    columns = [*copied, "scenes", "sampling"]
    tables = []
    for batch in parquet.iter_batches(layout.MANIFEST_BATCH_ROWS, columns=columns):
        rows = pa.Table.from_batches([batch])
        tables.append(rows.select(copied).append_column(
            "scenes", pc.list_value_length(rows["scenes"]).cast(pa.int32())).append_column(
            "frames_per_stage", frames_per_stage(rows["sampling"])))
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
