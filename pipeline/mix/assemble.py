"""The `mix` stage's reading and assembling: the partitions to hand to Ray tasks (read from manifest/videos.parquet a
row group at a time), and the streaming k-way merges of the partitions' sorted parts into a curriculum stage's files,
run in Ray tasks (pipeline/mix/final.py): `<task>.jsonl` (plus the optional `.json` list and InternVideo2.5 variant)
in the seeded order with the caps applied, `members.parquet` in (task, record_id, turn) order; then the small files
and the stage's checks. The result is byte-identical whatever the partitioning: every part is sorted, and the merge
order is the files' order."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.context import StageContext, StageInputMissing
from pipeline.ingest import manifest
from pipeline.io import storage
from pipeline.mix import merge as mix_merge
from pipeline.mix import records as mix_records
from pipeline.mix import validate as mix_validate
from pipeline.mix.partition import ANNOTATION_SOURCES, Partition
from pipeline.mix.select import VideoInfo
from pipeline.stats.sources import BuildOutput, arrow_s3_operation
from schemas import layout, mixture

MEMBERS_ROWS_PER_GROUP = 65536  # row groups of the assembled members.parquet (fixed, so bytes are deterministic)
# Of the sampling plans only the stage and the frame list (its length is the planned frames): the timestamps, prompts
# and the rest are three quarters of the column.
MANIFEST_COLUMNS = ["video_id", "extension", "shard", "reader_num_frames", "reader_fps",
                    "sampling.list.element.stage", "sampling.list.element.frame_indices"]


def _row_groups(ctx: StageContext, relative: str, columns: list[str]) -> Iterator[pa.Table]:
    """A Parquet file's rows, one row group at a time, read lazily through pyarrow's own S3 client on S3 (an endpoint
    that is down or hanging there is StorageUnavailable, as it is for boto3's reads). Not `iter_batches`: its reader
    keeps buffers of every row group it has read until the file ends (about 90 MiB more by the end of a 580k-row
    run, measured), which a merge pays once per part it holds open."""
    with arrow_s3_operation("GetObject", ctx.uri(relative)):
        parquet = BuildOutput(ctx.out).open_parquet(relative)
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group, columns=columns, use_threads=False).combine_chunks()


def _committed_annotations(ctx: StageContext) -> dict[str, set[str]]:
    """table -> stems of its committed annotation files (one listing per table)."""
    return {table: {rel.removesuffix(".parquet") for rel, _, _ in
                    storage.list_committed(ctx.uri(layout.annotation_dir(table))) if "/" not in rel}
            for table in ANNOTATION_SOURCES}


def iter_partitions(ctx: StageContext) -> Iterator[Partition]:
    """Partitions of `mix.partition_shards` consecutive shards with their videos, read from the manifest in
    batches. Raises StageInputMissing when a video is in no committed shard or a shard has no annotations."""
    ctx.require(layout.MANIFEST_VIDEOS, "shard")
    index_uri = ctx.require(layout.SHARD_INDEX, "shard")
    sha = {e["url"]: e["sha256"] for e in json.loads(storage.read_bytes(index_uri))["shardlist"]}
    annotated = _committed_annotations(ctx)
    size = ctx.cfg.mix.partition_shards
    current = Partition(0)
    shard = None

    def close_shard(name: str) -> None:
        stem = layout.shard_stem(name)
        for table in ANNOTATION_SOURCES:
            if stem not in annotated[table]:
                raise StageInputMissing(f"{layout.annotation_path(table, name)} is missing under {ctx.out}: run the "
                                        "`annotate` stage first")
        current.shards.append((name, ctx.uri(f"{layout.SHARDS_DIR}/{name}"), sha[name]))

    for batch in BuildOutput(ctx.out).batches(layout.MANIFEST_VIDEOS, MANIFEST_COLUMNS, layout.MANIFEST_BATCH_ROWS):
        frames = manifest.plan_frame_counts(pa.chunked_array([batch.column("sampling")]))
        for v, planned in zip(batch.drop_columns(["sampling"]).to_pylist(), frames):
            name = v["shard"]
            if name is None or name not in sha:
                raise StageInputMissing(f"video {v['video_id']} is in no committed shard: run the `shard` stage "
                                        "first")
            if name != shard:
                if shard is not None:
                    close_shard(shard)
                    if len(current.shards) >= size:
                        yield current
                        current = Partition(current.index + 1)
                shard = name
            current.videos.append(VideoInfo(v["video_id"], v["extension"], name, v["reader_num_frames"],
                                            v["reader_fps"]))
            for stage, n in planned:
                current.plan_frames[(v["video_id"], stage)] = n
    if shard is not None:
        close_shard(shard)
        yield current


def part_batches(ctx: StageContext, relative: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """A sorted part's or run's rows, a row group at a time (one batch each). A read costs ~0.6 ms however small the
    group, hence row groups of 1,024 rows in parts and 8,192 in runs."""
    for group in _row_groups(ctx, relative, columns):
        yield from group.to_batches()


def task_files(cfg, stage: str, task: str) -> list[str]:
    """The files of one (stage, task), relative to the output root: the JSONL, the optional `.json` list and
    InternVideo2.5 variant."""
    files = [layout.mixture_task_path(stage, task)]
    if cfg.mix.json_list:
        files.append(layout.mixture_task_path(stage, task, "json"))
    if cfg.mix.internvideo2_5:
        files.append(mix_records.internvideo_task_path(stage, task))
    return files


@dataclass
class TaskAssembly:
    count: int = 0  # records written (at most the task's cap)
    last_order: str | None = None  # order key of the last record written when the task is capped
    shards: set[str] = field(default_factory=set)  # shards its records point at


def write_task(ctx: StageContext, stage: str, task: str, parts: list[str], folder: str) -> TaskAssembly:
    """Merge a task's sorted record parts or runs (relative paths, in partition order) into its files under the
    local `folder` (at their paths relative to the output root), in the seeded order with the cap applied."""
    cfg = ctx.cfg
    cap = cfg.mix.stages[stage].tasks[task].max_records
    paths = [os.path.join(folder, rel) for rel in task_files(cfg, stage, task)]
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    streams = [part_batches(ctx, rel, mix_merge.RECORD_COLUMNS) for rel in parts]
    out = TaskAssembly()
    with contextlib.ExitStack() as files:
        jsonl, *others = [files.enter_context(open(p, "w", encoding="utf-8")) for p in paths]
        json_list = others.pop(0) if cfg.mix.json_list else None
        iv = others.pop(0) if cfg.mix.internvideo2_5 else None
        if json_list:
            json_list.write("[\n")
        for rows in mix_merge.merge_sorted(streams, mix_merge.order_key):
            if cap is not None and out.count + rows.num_rows > cap:
                rows = rows.slice(0, cap - out.count)
            if not rows.num_rows:
                break
            lines = rows["line"].to_pylist()
            jsonl.write("\n".join(lines) + "\n")
            if json_list:
                json_list.write((",\n" if out.count else "") + ",\n".join(lines))
            if iv:
                iv.write("\n".join(rows["internvideo_line"].to_pylist()) + "\n")
            out.shards.update(pc.unique(rows["shard"]).to_pylist())
            out.count += rows.num_rows
            out.last_order = rows[mixture.ORDER_COLUMN][-1].as_py()
            if cap is not None and out.count >= cap:
                break
        if json_list:
            json_list.write("\n]\n")
    if cap is None:
        out.last_order = None
    return out


def write_members(ctx: StageContext, member_parts: list[str], capped: dict[str, str], path: str) -> dict[str, int]:
    """Write a stage's members.parquet from its sorted members parts or runs (relative paths, in partition order):
    the rows of the records kept under the caps (`capped`: task -> order key of its last record kept); returns
    task -> distinct records."""
    names = mixture.MIX_MEMBERS.names
    streams = [part_batches(ctx, rel, mix_merge.MEMBER_COLUMNS) for rel in member_parts]
    records: dict[str, int] = {}

    def kept():
        previous = None  # (task, record_id) of the last row kept
        for rows in mix_merge.merge_sorted(streams, mix_merge.members_key):
            rows = _within_caps(rows, capped)
            if rows.num_rows:
                previous = _count_records(rows, previous, records)
                yield rows

    os.makedirs(os.path.dirname(path), exist_ok=True)
    written = False
    with pq.ParquetWriter(path, mixture.MIX_MEMBERS, compression="zstd") as writer:
        def write(rows: pa.Table) -> None:
            writer.write_table(pa.Table.from_arrays([rows[n].combine_chunks() for n in names],
                                                    schema=mixture.MIX_MEMBERS))

        for group in mix_merge.regroup(kept(), MEMBERS_ROWS_PER_GROUP):
            write(group)
            written = True
        if not written:
            write(mixture.MIX_MEMBERS.empty_table())
    return records


def small_files(cfg, stage: str, counts: dict[str, int], shards: set[str]) -> dict[str, bytes]:
    """The stage's small files (relative path -> bytes), data.yaml among them; counts: task -> records, in the
    config's task order."""
    small = {layout.mixture_file_path(stage, layout.MIX_WEIGHTS_JSON): mix_records.weights_json(stage, cfg, counts),
             layout.mixture_file_path(stage, layout.MIX_SHARDS_TXT): mix_records.shards_txt(stage, shards),
             layout.mixture_file_path(stage, layout.MIX_DATA_YAML): mix_records.data_yaml(stage, cfg, counts)}
    if cfg.mix.internvideo2_5:
        small[f"{mix_records.internvideo_dir(stage)}/{layout.MIX_INTERNVIDEO_META}"] = \
            mix_records.internvideo_meta(stage, cfg, counts)
    return small


def check_stage(cfg, stage: str, counts: dict[str, int], member_records: dict[str, int], small: dict[str, bytes],
                shards: set[str]) -> list[str]:
    """Problems of an assembled stage: per-task counts against members.parquet, and the stage-level checks."""
    problems = []
    for task in set(member_records) | set(counts):
        if member_records.get(task, 0) != counts.get(task, 0):
            problems.append(f"{layout.mixture_task_path(stage, task)}: {counts.get(task, 0)} records but "
                            f"members.parquet lists {member_records.get(task, 0)} of this task")
    check_files = dict(small)
    check_files.update({layout.mixture_task_path(stage, t): b"" for t in counts})
    existing = {f"{layout.SHARDS_DIR}/{s}" for s in shards}
    return problems + mix_validate.StageCheck(stage, check_files, cfg, {}, {}, existing).check_assembled(counts)


def _within_caps(rows: pa.Table, capped: dict[str, str]) -> pa.Table:
    """The rows of records kept under the caps: of a capped task, those ordered at most its last kept record."""
    drop = None
    for task, last in capped.items():
        over = pc.and_(pc.equal(rows["task"], task), pc.greater(rows[mixture.ORDER_COLUMN], last))
        drop = over if drop is None else pc.or_(drop, over)
    return rows if drop is None else rows.filter(pc.invert(drop))


def _count_records(rows: pa.Table, previous: tuple | None, records: dict[str, int]) -> tuple:
    """Adds to `records` (task -> distinct records) the records starting in `rows` (sorted by task and record_id,
    following the row `previous`); returns the (task, record_id) of its last row."""
    key = mix_merge.joined_key(rows["task"], rows["record_id"])
    before = pa.concat_arrays([pa.array([None if previous is None else "\x00".join(previous)], pa.string()),
                               key.slice(0, len(key) - 1)])
    starts = pc.fill_null(pc.not_equal(key, before), True)
    for task, count in zip(*(c.to_pylist() for c in pa.table({"task": rows["task"], "start": starts}).filter(
            starts).group_by("task", use_threads=False).aggregate([("start", "count")]).columns)):
        records[task] = records.get(task, 0) + count
    return rows["task"][-1].as_py(), rows["record_id"][-1].as_py()
