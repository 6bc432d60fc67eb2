"""Curriculum mixture contracts: task names, the per-stage membership table, and the annotation record keys.

The `mix` stage writes, per curriculum stage, `mixtures/<stage>/<task>.jsonl` (one training record per line) and
`mixtures/<stage>/members.parquet` (one row per annotation that went into that stage). Stats and the report read
the membership table; the per-task line counts of the JSONL files must equal its distinct `record_id` counts.
"""

from __future__ import annotations

import re

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
        pa.field("turn", pa.int32()),  # position of this annotation's QA pair inside its (multi-turn) record
    ]
)


# Record parts (work/mix-parts/): one row per training record of one partition, in the seeded order; the driver
# merges the partitions by `order` (byte-identical files whatever the partitioning). Members parts add `order` to
# MIX_MEMBERS rows, sorted by (task, record_id, turn).
ORDER_COLUMN = "order"
MIX_RECORDS_PART = pa.schema(
    [
        pa.field(ORDER_COLUMN, pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("line", pa.string(), nullable=False),  # the record as written to <task>.jsonl (no newline)
        pa.field("internvideo_line", pa.string()),  # the InternVideo2.5 variant's line, when configured
        pa.field("frame_dir", pa.string()),  # img stages: the record's frame directory name
        pa.field("frame_indices", pa.list_(pa.int32())),  # img stages: the frames it holds
    ]
)
MIX_MEMBERS_PART = pa.schema([pa.field(ORDER_COLUMN, pa.string(), nullable=False), *MIX_MEMBERS])
PART_ROWS_PER_GROUP = 1024  # small row groups: a merge holds one decoded group per part it reads
RUN_ROWS_PER_GROUP = 8192  # runs merged from parts (pipeline/mix/runs.py): a final merge reads few of them


def source_key(shard_stem: str, row: int) -> str:
    return f"{shard_stem}:{row}"


# ---------------------------------------------------------------------------------------------------------------
# Curriculum settings the config validates against

DURATION_CLASSES = ("short", "long")  # short: below mix.long_min_s; long: mix.long_min_s .. mix.long_max_s
VIDEO_READ_TYPES = ("decord", "img")  # video files, or frame directories of JPEGs
TIMESTAMP_PROMPT_MODES = ("trainer", "inline")  # trainer: VideoChat-Flash inserts it (--time_msg short)
SAMPLING_STRATEGY = re.compile(r"^(all|(first|first[2-4]|end):(\d+)(%?))$")


def sampling_strategy_problem(value: str) -> str | None:
    """Why a data.yaml `sampling_strategy` is unusable, or None when the trainer accepts it."""
    m = SAMPLING_STRATEGY.match(value)
    if not m:
        return f"{value!r} is not all, first:N, first:P%, end:N or firstK:N (K = 2..4)"
    if m.group(1) != "all":
        n = int(m.group(3))
        if n <= 0 or (m.group(4) and n > 100):
            return f"{value!r}: N must be > 0 and a percentage at most 100"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Training records (LLaVA-NeXT / VideoChat-Flash annotation format)

from schemas.sampling import IMAGE_TOKEN  # noqa: E402 - defined once, with the prompt that places it
RECORD_KEYS = ("id", "video", "video_id", "conversations", "duration", "start", "end")  # in written order
INTERNVIDEO_KEYS = ("id", "video", "conversations", "duration", "start", "end")  # InternVideo2.5: duration required
CLIP_END_MARGIN_S = 0.1  # the trainer ends a clip at most this far before the video's end


def record_id(stage: str, task: str, video_id: str, n: int) -> str:
    """`stage3-qa_family-<video_id>-0003`: the n-th record a video gives a task (n counts before any cap)."""
    return f"{stage}-{task}-{video_id}-{n:04d}"


def clip_window(vlen: int, fps: float, start_s: float, end_s: float) -> tuple[int, int, float]:
    """(first frame, frames, duration) of a start/end clip exactly as the VideoChat-Flash reader computes them:
    end clamped to the video's duration minus CLIP_END_MARGIN_S, `int()` truncation of seconds × fps."""
    duration = vlen / float(fps)
    start = max(0.0, start_s)
    end = min(duration - CLIP_END_MARGIN_S, end_s)
    clip_duration = end - start
    return int(start * fps), int(clip_duration * fps), clip_duration


def frame_file_name(prefix: str, n: int) -> str:
    """Frame payload name; the trainer orders a frame directory by the number after the last `_`."""
    return f"{prefix}_{n:06d}.jpg"


# weights.json, per stage: {"stage", "seed", "tasks": {task: {"weight", "records", "json_path"}}}; weights are
# normalised over the tasks that have records (the chance a streaming trainer draws that task next).
