"""Curriculum mixture contracts: task names, the per-stage membership table, and the annotation record keys.

The `mix` stage writes, per curriculum stage, `mixtures/<stage>/<task>.jsonl` (one training record per line) and
`mixtures/<stage>/members.parquet` (one row per annotation that went into that stage). Stats and the report read
the membership table; the per-task line counts of the JSONL files must equal its distinct `record_id` counts.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.tables import QA_FAMILIES

# Task families a stage can draw from: clip captions (timestamped, clipped samples), the video-level summary caption,
# each QA family, and grounding labels phrased as questions.
CAPTION_TASK = "caption"
SUMMARY_TASK = "summary"
GROUNDING_TASK = "grounding"
TASKS = (CAPTION_TASK, SUMMARY_TASK, *QA_FAMILIES, GROUNDING_TASK)

# Annotation tables a member row can point at.
SOURCE_TABLES = ("captions", "qa", "grounding")

MIX_MEMBERS = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),  # the "id" of the JSONL record this annotation feeds
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source_table", pa.string()),  # captions | qa | grounding
        pa.field("source_key", pa.string()),  # "<shard stem>:<row number>" in annotations/<table>/<shard>.parquet
        pa.field("duration_s", pa.float64()),  # of the sample the trainer sees (the clip for clipped samples)
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("num_frames", pa.int32()),  # frames the stage's sampling rule takes for this sample
        pa.field("visual_tokens", pa.int64()),  # num_frames * tokens per frame after HiCo merging
        pa.field("text_chars", pa.int64()),  # characters of this annotation's conversation turns
    ]
)


def source_key(shard_stem: str, row: int) -> str:
    return f"{shard_stem}:{row}"
