"""What the stats tables count from the model stages: annotation rows per video and task (with their rejected
outputs and random-weight rows), and HiCo clips per video and stage, each checked against its shard records."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.stats.sources import BuildOutput
from schemas import layout
from schemas import stats as stats_schema
from schemas.mixture import CAPTION_TASK, GROUNDING_TASK, SUMMARY_TASK



@dataclass
class Annotations:
    # per annotation file, Arrow tables of (video_id, task, rows) and of rejected outputs (video_id, rows); summed
    # per video by pipeline/stats/videos.py
    task_counts: list = field(default_factory=list)
    reject_video_counts: list = field(default_factory=list)
    reject_counts: Counter = field(default_factory=Counter)  # (task, reason) -> rejected outputs
    random_videos: list = field(default_factory=list)  # Arrow arrays of video_ids with a random-weight row
    # (table, shard stem) -> per row: its video_id (dictionary-encoded) and whether a random-weight model made it;
    # Arrow arrays, so holding every row of a large build costs a few bytes per row, not a Python object each
    row_videos: dict = field(default_factory=dict)
    random_rows: dict = field(default_factory=dict)


ANNOTATION_COLUMNS = {
    "captions": ["video_id", "level", "random_init"],
    "qa": ["video_id", "family", "random_init"],
    "grounding": ["video_id", "random_init"],
    "rejects": ["video_id", "task", "reason", "random_init"],
}


def _tasks(table: str, rows: pa.Table) -> pa.Array:
    """The mixture task of every row of an annotation table."""
    n = rows.num_rows
    if table == "captions":
        is_video = pc.fill_null(pc.equal(rows["level"], "video"), False)
        return pc.if_else(is_video, SUMMARY_TASK, CAPTION_TASK)
    if table == "qa":
        return rows["family"]
    return pa.array([GROUNDING_TASK] * n, pa.string()) if n else pa.array([], pa.string())


def read_annotations(out: BuildOutput, accepted: pa.Array, mismatches: list[str]) -> Annotations:
    """Counts per video and task, computed with Arrow per annotation file (no Python object per row)."""
    ann = Annotations()
    per_shard: dict[str, Counter] = defaultdict(Counter)
    for table, columns in ANNOTATION_COLUMNS.items():
        for path in out.parquet_parts(layout.annotation_dir(table)):
            stem = layout.shard_stem(path.rsplit("/", 1)[-1].removesuffix(".parquet"))
            rows = out.read_table(path, columns=columns).combine_chunks()
            per_shard[stem][table] += rows.num_rows
            videos = rows["video_id"]
            unknown = pc.unique(pc.filter(videos, pc.invert(pc.is_in(videos, value_set=accepted)))).to_pylist()
            if unknown:
                mismatches.append(f"{path}: {len(unknown)} videos are not in manifest/videos.parquet (e.g. "
                                  f"{sorted(unknown)[:stats_schema.EXAMPLES]}; rerun the `annotate` stage)")
            random = pc.fill_null(rows["random_init"], False).combine_chunks() if rows.num_rows else \
                pa.array([], pa.bool_())
            ann.random_videos.append(pc.unique(pc.filter(videos, random)))
            if table == "rejects":
                ann.reject_video_counts.append(rows.group_by("video_id").aggregate([("video_id", "count")])
                                               .rename_columns({"video_id_count": "rows"}))
                for r in rows.group_by(["task", "reason"]).aggregate([("video_id", "count")]).to_pylist():
                    ann.reject_counts[(r["task"], stats_schema.reason_group(r["reason"]))] += r["video_id_count"]
                continue
            ann.row_videos[(table, stem)] = pc.dictionary_encode(videos).combine_chunks() if rows.num_rows else \
                pa.array([], pa.string())
            ann.random_rows[(table, stem)] = random
            ann.task_counts.append(pa.table({"video_id": videos, "task": _tasks(table, rows)}).group_by(
                ["video_id", "task"]).aggregate([("task", "count")]).rename_columns({"task_count": "rows"}))
    for stem, counts in sorted(per_shard.items()):
        record_path = layout.annotation_record_path(stem)
        if not out.exists(record_path):
            continue
        recorded = {t: n for t, n in out.read_json(record_path).get("counts", {}).items() if t in ANNOTATION_COLUMNS}
        found = {t: counts.get(t, 0) for t in recorded}
        if recorded != found:
            mismatches.append(f"annotations of {stem}: the tables hold {found} rows but {record_path} recorded "
                              f"{recorded} (rerun the `annotate` stage)")
    return ann


def read_hico(out: BuildOutput, mismatches: list[str]) -> tuple[list[pa.Table], list[pa.Array]]:
    """(per HiCo stage, a table of clips per video: video_id, stage, rows; arrays of the video_ids with
    random-weight tokens)."""
    clips: list[pa.Table] = []
    random_videos: list[pa.Array] = []
    for stage in out.hico_stages():
        index = out.read_table(layout.hico_index_path(stage), columns=["video_id", "num_rows"])
        clips.append(pa.table({"video_id": index["video_id"], "stage": pa.array([stage] * index.num_rows, pa.string()),
                               "rows": index["num_rows"]}))
        records_dir = f"{layout.HICO_RECORDS_DIR}/{stage}"
        recorded = 0
        for name in out.listing(records_dir).files:
            record = out.read_json(f"{records_dir}/{name}")
            recorded += record.get("clips", 0)
            if record.get("random_init"):
                random_videos.append(pa.array([s["video_id"] for s in record.get("segments", [])], pa.string()))
        indexed = pc.sum(index["num_rows"]).as_py() or 0
        if out.listing(records_dir).files and recorded != indexed:
            mismatches.append(f"{layout.hico_index_path(stage)} lists {indexed} clips but the records in "
                              f"{records_dir}/ hold {recorded} (rerun the `hico` stage)")
    return clips, random_videos
