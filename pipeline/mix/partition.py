"""The `mix` stage's per-row work, one Ray task per partition (a run of consecutive shards, `mix.partition_shards`):

1. `build_records`: read the partition's annotation tables, form and place its candidates (uncapped), serialise and
   validate its records exactly as a whole stage's would be, and write them as record parts (per curriculum stage
   and task, in the seeded order) and members parts (per stage, sorted by task, record_id, turn);
2. `write_payloads`: after the driver has merged the parts and knows each capped task's last order key, copy the
   videos and write the frame directories the partition's chosen records point at.

A partition only ever holds its own videos and annotations, so a task's memory does not grow with the build."""

from __future__ import annotations

import gc
import io
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.context import StageContext, configure_worker
from pipeline.io import storage
from pipeline.mix import payload as mix_payload
from pipeline.mix import records as mix_records
from pipeline.mix import select as mix_select
from pipeline.mix import validate as mix_validate
from schemas import layout, mixture

ANNOTATION_SOURCES = ("captions", "qa", "grounding")
# What the mixtures read of each annotation table (mix_text and mix_select): never the provenance columns.
ANNOTATION_COLUMNS = {"captions": ["video_id", "level", "start_s", "end_s", "text", "random_init"],
                      "qa": ["video_id", "family", "form", "question", "options", "answer", "random_init"],
                      "grounding": ["video_id", "query", "start_s", "end_s", "random_init"]}


@dataclass
class Partition:
    index: int
    shards: list[tuple[str, str, str]] = field(default_factory=list)  # (name, URI, sha256), in shard order
    videos: list[mix_select.VideoInfo] = field(default_factory=list)
    plan_frames: dict[tuple[str, str], int] = field(default_factory=dict)  # (video_id, stage) -> planned frames


class AnnotationRows:
    """Every annotation row of some shards with its source key, read shard by shard as it is consumed."""

    def __init__(self, ctx: StageContext, shard_names: list[str]):
        self.ctx, self.shard_names = ctx, shard_names
        self.random_init = False

    def __iter__(self):
        for name in self.shard_names:
            stem = layout.shard_stem(name)
            for table in ANNOTATION_SOURCES:
                uri = self.ctx.uri(layout.annotation_path(table, name))
                rows = _pylist(storage.read_parquet(uri, columns=ANNOTATION_COLUMNS[table]))
                for i, row in enumerate(rows):
                    self.random_init = self.random_init or bool(row.get("random_init"))
                    yield mix_select.AnnotationRow(table, mixture.source_key(stem, i), row)


def _pylist(table: pa.Table) -> list[dict]:
    """table.to_pylist(), a column at a time (pyarrow's builds each row by indexing every column list)."""
    names = table.column_names
    return [dict(zip(names, values)) for values in zip(*(c.to_pylist() for c in table.columns))]


def part_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=mixture.PART_ROWS_PER_GROUP)
    return buf.getvalue()


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8").split("\n")[:-1]


def _expected_payloads(stage_files: mix_records.StageFiles, videos: dict, prefix: str) -> set[str]:
    paths = {layout.mix_video_path(v, videos[v].extension) for v in stage_files.videos}
    for d in stage_files.frame_dirs.values():
        paths.update(d.files(prefix))
    return paths


@contextmanager
def cyclic_gc_paused():
    """Python's cycle collector off for a block that allocates millions of small containers and keeps them alive
    (candidates, samples, records): its passes over them cost about a third of the task's CPU and find no cycles;
    reference counting still frees everything."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build_records(part: Partition, ctx: StageContext) -> dict:
    """Ray task: the partition's record and members parts; returns the tasks it has records of, per stage, and the
    validation problems (when there are any, nothing was written)."""
    with cyclic_gc_paused():
        return _build_records(part, ctx)


def _build_records(part: Partition, ctx: StageContext) -> dict:
    configure_worker(ctx.cfg)
    cfg = ctx.cfg
    videos = {v.video_id: v for v in part.videos}
    rows = AnnotationRows(ctx, [name for name, _, _ in part.shards])
    selected = mix_select.select(mix_select.candidates(rows, videos, cfg.mix.max_turns), videos, cfg.mix,
                                 cfg.sampling, capped=False)
    shard_paths = {f"{layout.SHARDS_DIR}/{name}" for name, _, _ in part.shards}
    problems: list[str] = []
    outputs: dict[str, bytes] = {}
    tasks: dict[str, list[str]] = {}
    for stage, per_task in selected.items():
        o = mix_records.stage_files(stage, per_task, videos, cfg, with_members_parquet=False)
        existing = _expected_payloads(o, videos, cfg.mix.frame_prefix) | shard_paths
        problems += [f"(partition {part.index}) {p}" for p in
                     mix_validate.stage_problems(stage, o.files, cfg, videos, part.plan_frames, existing,
                                                  o.members)]
        img = cfg.mix.stages[stage].video_read_type == "img"
        record_ids, orders = [], []
        for task, samples in per_task.items():
            iv = (_lines(o.files[mix_records.internvideo_task_path(stage, task)]) if cfg.mix.internvideo2_5
                  else [None] * len(samples))
            cols = {mixture.ORDER_COLUMN: [s.order for s in samples], "record_id": [s.record_id for s in samples],
                    "video_id": [s.candidate.video_id for s in samples],
                    "shard": [videos[s.candidate.video_id].shard for s in samples],
                    "line": o.lines[task], "internvideo_line": iv,
                    "frame_dir": [mix_records.frame_dir_name(s) for s in samples] if img else [None] * len(samples),
                    "frame_indices": [list(s.frame_indices) for s in samples] if img else [None] * len(samples)}
            outputs[layout.mix_records_part_path(stage, task, part.index)] = part_bytes(
                pa.table(cols, schema=mixture.MIX_RECORDS_PART))
            record_ids += cols["record_id"]
            orders += cols[mixture.ORDER_COLUMN]
        members = o.members
        order = pa.array(orders, pa.string()).take(
            pc.index_in(members.column("record_id"), value_set=pa.array(record_ids, pa.string())))
        outputs[layout.mix_members_part_path(stage, part.index)] = part_bytes(
            members.add_column(0, mixture.MIX_MEMBERS_PART.field(mixture.ORDER_COLUMN), order)
            .cast(mixture.MIX_MEMBERS_PART))
        tasks[stage] = list(per_task)
    if not problems:
        for rel, data in outputs.items():
            storage.write_bytes(ctx.uri(rel), data)
    return {"partition": part.index, "tasks": tasks, "problems": problems, "random_init": rows.random_init}


def write_payloads(part: Partition, tasks: dict[str, list[str]], last_order: dict[tuple[str, str], str | None],
                   ctx: StageContext) -> dict:
    """Ray task: the videos and frame directories of the partition's chosen records (order at most the task's
    `last_order` when capped); writes the sorted list of the payload files it is responsible for to its payload
    list (read by the stale-file check, pipeline/mix/files.py) and returns per-partition counts."""
    configure_worker(ctx.cfg)
    cfg = ctx.cfg
    videos = {v.video_id: v for v in part.videos}
    copy_videos: set[str] = set()
    frame_dirs: dict[tuple[str, str], mix_records.FrameDir] = {}
    for stage, names in tasks.items():
        img = cfg.mix.stages[stage].video_read_type == "img"
        for task in names:
            t = storage.read_parquet(ctx.uri(layout.mix_records_part_path(stage, task, part.index)),
                                     columns=[mixture.ORDER_COLUMN, "video_id", "frame_dir", "frame_indices"])
            last = last_order.get((stage, task))
            for row in t.to_pylist():
                if last is not None and row[mixture.ORDER_COLUMN] > last:
                    continue
                if img:
                    key = (stage, row["frame_dir"])
                    frame_dirs.setdefault(key, mix_records.FrameDir(stage, row["frame_dir"], row["video_id"],
                                                                    tuple(row["frame_indices"])))
                else:
                    copy_videos.add(row["video_id"])
    shards = {name: (uri, sha) for name, uri, sha in part.shards}
    units, done = mix_payload.plan_units(ctx, videos, copy_videos, list(frame_dirs.values()), shards, None)
    for unit in units:
        mix_payload.write_unit(unit, ctx)
    files = sorted({layout.mix_video_path(v, videos[v].extension) for v in copy_videos}
                   | {f for d in frame_dirs.values() for f in d.files(cfg.mix.frame_prefix)})
    listed = "".join(f"{f}\n" for f in files).encode("utf-8")
    storage.write_bytes(ctx.uri(layout.mix_payloads_part_path(part.index)), listed)
    return {"partition": part.index, "done": done, "written": len(units), "videos": len(copy_videos),
            "frame_dirs": len(frame_dirs), "files": len(files)}
