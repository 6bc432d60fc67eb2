"""What the stats tables count from the model stages: annotation rows per video and task (with their rejected
outputs and random-weight rows), and HiCo clips per video and stage, each checked against its shard records."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from pipeline.stats_sources import BuildOutput
from schemas import layout
from schemas.mixture import CAPTION_TASK, GROUNDING_TASK, SUMMARY_TASK

EXAMPLES = 3


@dataclass
class Annotations:
    per_video: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # video -> task -> rows
    rejects_per_video: Counter = field(default_factory=Counter)
    reject_rows: list[dict] = field(default_factory=list)  # video_id, task, reason
    random_videos: set = field(default_factory=set)
    random_keys: set = field(default_factory=set)  # "<table>/<shard stem>:<row>"
    row_videos: dict = field(default_factory=dict)  # (table, shard stem) -> video_id per row


ANNOTATION_COLUMNS = {
    "captions": ["video_id", "level", "random_init"],
    "qa": ["video_id", "family", "random_init"],
    "grounding": ["video_id", "random_init"],
    "rejects": ["video_id", "task", "reason", "random_init"],
}


def _task_of(table: str, row: dict) -> str:
    if table == "captions":
        return SUMMARY_TASK if row["level"] == "video" else CAPTION_TASK
    if table == "qa":
        return row["family"]
    return GROUNDING_TASK


def read_annotations(out: BuildOutput, accepted: set[str], mismatches: list[str]) -> Annotations:
    ann = Annotations()
    per_shard: dict[str, Counter] = defaultdict(Counter)
    for table, columns in ANNOTATION_COLUMNS.items():
        for path in out.parquet_parts(layout.annotation_dir(table)):
            stem = layout.shard_stem(path.rsplit("/", 1)[-1].removesuffix(".parquet"))
            rows = out.read_table(path, columns=columns).to_pylist()
            per_shard[stem][table] += len(rows)
            ann.row_videos[(table, stem)] = [r["video_id"] for r in rows]
            unknown = {r["video_id"] for r in rows} - accepted
            if unknown:
                mismatches.append(f"{path}: {len(unknown)} videos are not in manifest/videos.parquet (e.g. "
                                  f"{sorted(unknown)[:EXAMPLES]}; rerun the `annotate` stage)")
            for i, r in enumerate(rows):
                if r["random_init"]:
                    ann.random_videos.add(r["video_id"])
                    ann.random_keys.add(f"{table}/{stem}:{i}")
                if table == "rejects":
                    ann.rejects_per_video[r["video_id"]] += 1
                    ann.reject_rows.append(r)
                else:
                    ann.per_video[r["video_id"]][_task_of(table, r)] += 1
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


def read_hico(out: BuildOutput, mismatches: list[str]) -> tuple[dict[str, dict[str, int]], set[str]]:
    """(video_id -> stage -> clips, videos with random-weight tokens)."""
    clips: dict[str, dict[str, int]] = defaultdict(dict)
    random_videos: set[str] = set()
    for stage in out.hico_stages():
        index = out.read_table(layout.hico_index_path(stage), columns=["video_id", "num_rows"]).to_pylist()
        for row in index:
            clips[row["video_id"]][stage] = clips[row["video_id"]].get(stage, 0) + row["num_rows"]
        records_dir = f"{layout.HICO_RECORDS_DIR}/{stage}"
        recorded = 0
        for name in out.listing(records_dir).files:
            record = out.read_json(f"{records_dir}/{name}")
            recorded += record.get("clips", 0)
            if record.get("random_init"):
                random_videos.update(s["video_id"] for s in record.get("segments", []))
        indexed = sum(r["num_rows"] for r in index)
        if out.listing(records_dir).files and recorded != indexed:
            mismatches.append(f"{layout.hico_index_path(stage)} lists {indexed} clips but the records in "
                              f"{records_dir}/ hold {recorded} (rerun the `hico` stage)")
    return clips, random_videos
