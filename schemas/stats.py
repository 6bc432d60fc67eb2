"""Arrow schemas of the auditor tables in `stats/` (written by the `stats` stage), and how their counts are defined.

- `stats/videos.parquet`: one row per accepted video — probe fields, scenes, frames per curriculum stage, annotation
  counts per task, rejected annotation outputs, the curriculum stages it feeds (`stage_tags`, from the mixtures'
  membership tables) and HiCo clips per encoded stage.
- `stats/shards.parquet`: one row per committed shard (from its record in `work/shards/`, checked against
  `shards/index.json`).
- `stats/rejects.parquet`: one row per reject reason: input rejects (`scope = 'input'`, from manifest/rejects) and
  rejected model outputs (`scope = 'annotation'`, from annotations/rejects).
- `stats/stages.parquet`: one row per curriculum stage and task of the mixtures.

Counting rules:
- A *sample* is one line of `mixtures/<stage>/<task>.jsonl` (one training record). A multi-turn record groups several
  annotations of one video, so `annotations >= samples`.
- `hours` and `visual_tokens` count each sample once: its duration (the clip's, for clipped samples) and the visual
  tokens of its sampled frames, both from the membership table.
- `text_tokens` are counted on the JSONL records themselves, tokenizer-independently: the words and punctuation marks
  (regex TEXT_TOKEN_PATTERN) of every conversation turn, with the `<image>` placeholder removed. Subword tokenizers
  (Qwen2, LLaMA) give more, typically 1.1–1.5x this count for English text; `text_chars` is exact.
- Annotation reject reasons carry per-row details (numbers, parser messages); they are grouped by REASON_DETAIL
  normalisation: parenthesised details dropped, numbers replaced by `N`.
"""

from __future__ import annotations

import re

import pyarrow as pa

from schemas.sampling import IMAGE_TOKEN
from schemas.tables import PROBE_FIELDS

TEXT_TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")

REJECT_SCOPES = ("input", "annotation")
EXAMPLES = 3  # offending ids quoted per consistency message

# How the `stats` stage cuts its work so that no worker grows with the build (pipeline/stats/mixtures.py,
# pipeline/stats/annotations.py). A (curriculum stage, task) larger than one sub-unit is checked in parts: its rows of
# members.parquet in runs of whole row groups of about MIXTURE_CHECK_MEMBER_ROWS rows, its JSONL in line-aligned byte
# ranges of MIXTURE_CHECK_JSONL_BYTES, and the record ids of both exchanged by hash bucket (as many buckets as
# parts) so that each bucket is compared on its own. The split changes no byte of the stats tables.
MIXTURE_CHECK_MEMBER_ROWS = 524_288
MIXTURE_CHECK_JSONL_BYTES = 256 << 20
# shards (their records, annotation tables or HiCo records) one reading task of the `stats` stage takes
STATS_SHARDS_PER_TASK = 64
# rows of manifest/videos.parquet one task of the `stats` stage turns into stats/videos.parquet rows, and the rows of
# each row group of stats/videos.parquet (the bytes of a whole-table write while the build fits one group); the
# driver holds the rows of the tasks in flight and of one row group at most
STATS_VIDEOS_PER_TASK = 8192
STATS_VIDEOS_ROWS_PER_GROUP = 8192
# rows of a build table (stats/videos.parquet, the manifest) a driver reads at a time while it sums it: the stats
# section of summary.json and the report
TABLE_BATCH_ROWS = 8192

_PROBE_COLUMNS = [f for f in PROBE_FIELDS if f.name not in ("video_id", "sha256")]
# Columns of stats/videos.parquet copied unchanged from manifest/videos.parquet.
VIDEO_COPIED_COLUMNS = ("video_id", "source_uri", "shard", *(f.name for f in _PROBE_COLUMNS))

VIDEOS = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string()),
        pa.field("shard", pa.string()),
        *_PROBE_COLUMNS,
        pa.field("scenes", pa.int32()),
        pa.field("scenes_per_minute", pa.float64()),
        pa.field("frames_per_stage", pa.map_(pa.string(), pa.int32())),  # curriculum stage -> sampled frames
        pa.field("annotations_per_task", pa.map_(pa.string(), pa.int64())),  # task (schemas.mixture.TASKS) -> rows
        pa.field("captions", pa.int64()),  # clip and video-level captions
        pa.field("qa", pa.int64()),
        pa.field("grounding", pa.int64()),
        pa.field("annotation_rejects", pa.int64()),  # model outputs of this video that failed validation
        pa.field("stage_tags", pa.list_(pa.string())),  # curriculum stages whose mixtures use this video, sorted
        pa.field("hico_clips", pa.map_(pa.string(), pa.int32())),  # stage of hico/<stage>/ -> clips of this video
        pa.field("random_init", pa.bool_()),  # some annotation or HiCo token row of it came from random weights
    ]
)

SHARDS = pa.schema(
    [
        pa.field("shard", pa.string(), nullable=False),
        pa.field("samples", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("hours", pa.float64()),
    ]
)

REJECTS = pa.schema(
    [
        pa.field("scope", pa.string(), nullable=False),  # input | annotation
        pa.field("stage", pa.string()),  # the stage that rejected it: probe, dedup, scenes, annotate
        pa.field("task", pa.string()),  # annotation rejects: caption | qa | grounding; null for inputs
        pa.field("reason", pa.string(), nullable=False),
        pa.field("count", pa.int64()),
        pa.field("bytes", pa.int64()),  # input rejects: bytes of the rejected files, where known
        pa.field("share", pa.float64()),  # count / all rejects of the same scope
    ]
)

STAGES = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("samples", pa.int64()),  # JSONL lines of mixtures/<stage>/<task>.jsonl
        pa.field("annotations", pa.int64()),  # membership rows (several per multi-turn sample)
        pa.field("videos", pa.int64()),  # distinct videos
        pa.field("hours", pa.float64()),
        pa.field("visual_tokens", pa.int64()),
        pa.field("text_tokens", pa.int64()),
        pa.field("text_chars", pa.int64()),
        pa.field("random_init", pa.bool_()),  # some annotation feeding it came from a random-weight model
    ]
)

SCHEMAS = {"videos": VIDEOS, "shards": SHARDS, "rejects": REJECTS, "stages": STAGES}


def count_text_tokens(text: str) -> int:
    return len(TEXT_TOKEN_PATTERN.findall(text.replace(IMAGE_TOKEN, " ")))


_PARENTHESISED = re.compile(r"\s*\([^)]*\)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def reason_group(reason: str) -> str:
    """`not valid JSON (Expecting value at char 0)` -> `not valid JSON`; `start 12.5 is not before end 3` ->
    `start N is not before end N`."""
    text = _PARENTHESISED.sub("", reason or "").strip()
    return _NUMBER.sub("N", text) or "unknown"
