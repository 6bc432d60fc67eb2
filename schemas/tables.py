"""Arrow schemas of every Parquet table a build writes, and a strict row→table converter."""

from __future__ import annotations

from typing import Iterable, Mapping

import pyarrow as pa

from schemas.errors import LongVidError

SCENE = pa.struct([("start_s", pa.float64()), ("end_s", pa.float64())])

SAMPLING_PLAN = pa.struct(
    [
        ("stage", pa.string()),
        ("sample", pa.string()),
        ("min_frames", pa.int32()),
        ("max_frames", pa.int32()),
        ("resolution", pa.int32()),
        ("duration_s", pa.float64()),
        ("frame_indices", pa.list_(pa.int32())),
        ("timestamps_s", pa.list_(pa.float64())),
        ("prompt", pa.string()),
    ]
)

# What the probe learns about one input file; shared by the probe parts and the videos manifest.
PROBE_FIELDS = [
    pa.field("sha256", pa.string()),
    pa.field("video_id", pa.string()),
    pa.field("bytes", pa.int64()),
    pa.field("extension", pa.string()),
    pa.field("container", pa.string()),
    pa.field("codec", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("rotation", pa.int32()),
    pa.field("fps", pa.float64()),
    pa.field("num_frames", pa.int64()),
    pa.field("duration_s", pa.float64()),
    pa.field("has_audio", pa.bool_()),
    pa.field("bitrate", pa.int64()),
    # The training reader's view (decord, or PyAV where decord fails): sampling plans use these.
    pa.field("reader", pa.string()),
    pa.field("reader_num_frames", pa.int64()),
    pa.field("reader_fps", pa.float64()),
]

SOURCE_FIELDS = [
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("source", pa.string()),  # the configured source (directory, manifest, prefix, URL) that listed it
    pa.field("source_metadata", pa.string()),  # JSON object of carried manifest columns
]

CRAWL = pa.schema(SOURCE_FIELDS + [pa.field("size_hint", pa.int64())])

PROBE_PART = pa.schema(
    SOURCE_FIELDS
    + [pa.field("ok", pa.bool_()), pa.field("reason", pa.string()), pa.field("message", pa.string())]
    + PROBE_FIELDS
)

SCENES_PART = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("ok", pa.bool_()),
        pa.field("reason", pa.string()),
        pa.field("message", pa.string()),
        pa.field("scenes", pa.list_(SCENE)),
    ]
)

VIDEOS = pa.schema(
    [pa.field("video_id", pa.string(), nullable=False)]
    + SOURCE_FIELDS
    + [f for f in PROBE_FIELDS if f.name != "video_id"]
    + [
        pa.field("scenes", pa.list_(SCENE)),
        pa.field("sampling", pa.list_(SAMPLING_PLAN)),
        pa.field("shard", pa.string()),
    ]
)

REJECTS = pa.schema(
    SOURCE_FIELDS
    + [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("message", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("stage", pa.string()),  # the stage that rejected it
    ]
)


class SchemaMismatch(LongVidError, ValueError):
    pass


def to_table(rows: Iterable[Mapping], schema: pa.Schema) -> pa.Table:
    """Build a table from dict rows, refusing keys the schema lacks (a typo would otherwise drop data silently)."""
    rows = list(rows)
    names = set(schema.names)
    for row in rows:
        extra = set(row) - names
        if extra:
            raise SchemaMismatch(f"columns not in schema: {sorted(extra)}")
    return pa.Table.from_pylist(rows, schema=schema)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


# HiCo clip tokens: one row per clip of `clip_len` sampled frames, merged to TOKENS_PER_CLIP tokens of width C.
HICO_TOKEN_COLUMN = "tokens"
HICO_TOKENS_PER_CLIP = 64


def hico_schema(width: int, tokens_per_clip: int = HICO_TOKENS_PER_CLIP) -> pa.Schema:
    return pa.schema(
        [
            pa.field("video_id", pa.string(), nullable=False),
            pa.field("stage", pa.string()),
            pa.field("clip_index", pa.int32()),
            pa.field("frame_indices", pa.list_(pa.int32())),
            pa.field("t_start_s", pa.float64()),
            pa.field("t_end_s", pa.float64()),
            pa.field("padded", pa.bool_()),
            pa.field(HICO_TOKEN_COLUMN, pa.fixed_shape_tensor(pa.float16(), [tokens_per_clip, width])),
            pa.field("encoder_id", pa.string()),
            pa.field("weights_sha256", pa.string()),  # content hash of the encoder checkpoint
            pa.field("random_init", pa.bool_()),
            pa.field("merge_dtype", pa.string()),  # dtype the ToMe merge ran in (hico.merge_dtype)
            pa.field("resize", pa.string()),  # frame resize: "pil" (as the model's image processor) | "torch"
        ]
    )


# Where each video's clips live: one row per (video, row group) segment, so a reader touches only those bytes.
HICO_INDEX = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("file", pa.string()),  # relative to the hico/<stage>/ folder
        pa.field("row_group", pa.int32()),
        pa.field("row_offset", pa.int32()),  # first row of the video inside the row group
        pa.field("num_rows", pa.int32()),
    ]
)


# Annotations. Every table carries the provenance columns, so each row says which model and prompt made it. A row
# built from other rows ("template" QA from captions) carries the model, weights and random_init of its inputs.
PROVENANCE_FIELDS = [
    pa.field("backend", pa.string()),  # "transformers" | "hico_mllm" | "template" (built from that model's rows)
    pa.field("model", pa.string()),  # checkpoint path, or a fixed name for built-in demo models
    pa.field("weights_sha256", pa.string()),  # content hash of the checkpoint's weight files
    pa.field("random_init", pa.bool_()),
    pa.field("prompt_id", pa.string()),
    pa.field("prompt_version", pa.int32()),
    pa.field("generation_params", pa.string()),  # JSON
    pa.field("num_frames", pa.int32()),  # sampled frames the model saw for this row
    pa.field("frames_stage", pa.string()),
]

QA_FAMILIES = ("event_understanding", "event_count", "event_relationship", "temporal_grounding", "free_qa")
QA_FORMS = ("open", "mc")

CAPTIONS = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("level", pa.string()),  # "clip" | "video"
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("text", pa.string()),
    ]
    + PROVENANCE_FIELDS
)

QA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("family", pa.string()),
        pa.field("form", pa.string()),
        pa.field("question", pa.string()),
        pa.field("options", pa.list_(pa.string())),  # empty when open
        pa.field("answer", pa.string()),
        pa.field("start_s", pa.float64()),  # null when not time-bound
        pa.field("end_s", pa.float64()),
        pa.field("generator", pa.string()),  # "template" | "model"
    ]
    + PROVENANCE_FIELDS
)

GROUNDING = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("query", pa.string()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("duration_s", pa.float64()),
        pa.field("origin", pa.string()),  # "caption" | "scene"
    ]
    + PROVENANCE_FIELDS
)

ANNOTATION_REJECTS = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("task", pa.string()),  # "caption" | "qa" | "grounding"
        pa.field("family", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("raw_output", pa.string()),
        pa.field("attempts", pa.int32()),
    ]
    + PROVENANCE_FIELDS
)
