"""The manifest and shard plan over columns (the `shard` stage's, and the end of `probe` and `scenes` through
pipeline/ingest/manifest_refresh.py): the same manifest `manifest.assemble` builds (crawl list → probe parts →
dedup → scene parts → shard assignment), computed with Arrow tables so the driver holds no Python object per video;
Ray tasks read the committed parts.
Sampling plans, sample documents and content digests, the per-row work, are made by `partition_videos` inside the
Ray task of each partition (a run of consecutive shards); the manifest's videos table is then written row group by
row group as the partitions come back (`VideosWriter`)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import sampling
from pipeline.core import parts, ray_runtime
from pipeline.core.context import StageContext, configure_worker
from pipeline.ingest import manifest, sharding
from pipeline.io import storage
from schemas import layout, reasons, tables

PARTS_PER_READ_TASK = 256  # committed probe or scene parts one Ray task reads for the plan
# Row groups of manifest/videos.parquet: a build of up to this many videos gets the single row group a whole-table
# write gives; larger ones are written one group at a time, so the writer never holds more.
VIDEOS_ROWS_PER_GROUP = 8192
PROBE_COLUMNS = [f.name for f in tables.PROBE_PART]
SCENE_COLUMNS = ["video_id", "ok", "reason", "message", "scenes"]
# Manifest columns a probe row carries (the rest — scenes, sampling, shard — are added per video).
CARRIED = [n for n in tables.VIDEOS.names if n not in ("scenes", "sampling", "shard")]


@dataclass
class Plan:
    crawl_uris: pa.ChunkedArray
    videos: pa.Table  # accepted videos in video_id order: CARRIED columns and `scenes`
    rejects: pa.Table  # tables.REJECTS, in source_uri order
    probe_pending: int = 0
    scenes_pending: int = 0
    shards: list[tuple[int, int, int]] = field(default_factory=list)  # (index, first row, end row) of `videos`

    @property
    def complete(self) -> bool:
        return self.probe_pending == 0


@dataclass
class Partition:
    index: int
    videos: pa.Table  # the rows of its shards
    shards: list[tuple[int, int, int]]  # (shard index, first row, end row) within `videos`


def read_part_group(uris: list[str], columns: list[str], schema: pa.Schema, ctx: StageContext) -> pa.Table:
    """One Ray task: `columns` of a group of committed parts, in order, as one table."""
    configure_worker(ctx.cfg)
    read = [_empty(schema, columns)] + [storage.read_parquet(uri, columns) for uri in uris]
    return pa.concat_tables(read, promote_options="permissive").combine_chunks()


def _read_parts(ctx: StageContext, directory: str, spans: list[tuple[str, int, int]], schema: pa.Schema,
                columns: list[str]) -> tuple[pa.Table, int]:
    """The committed parts among `spans` (only `columns`), and the number of keys of the parts not committed yet.
    The driver lists the folder once; Ray tasks read the parts, PARTS_PER_READ_TASK each, a bounded number at a
    time, and each returns its group as one table."""
    committed = manifest.committed_parts(ctx, directory)
    uris, pending = [], 0
    for name, start, stop in spans:
        if name in committed:
            uris.append(committed[name][0])
        else:
            pending += stop - start
    groups = [uris[i:i + PARTS_PER_READ_TASK] for i in range(0, len(uris), PARTS_PER_READ_TASK)]
    read = list(ray_runtime.imap_units("manifest", read_part_group, groups, (columns, schema, ctx),
                                       f"{directory.rsplit('/', 1)[-1]} parts", total_items=len(uris),
                                       items_of=len))
    return pa.concat_tables([_empty(schema, columns)] + read, promote_options="permissive"), pending


def _empty(schema: pa.Schema, columns: list[str]) -> pa.Table:
    return pa.schema([schema.field(c) for c in columns]).empty_table()


def _rejects(rows: pa.Table, reason, message, stage: str, duplicate_of=None) -> pa.Table:
    """tables.REJECTS rows of some probe rows (`manifest._reject` over columns)."""
    n = rows.num_rows
    columns = {"source_uri": rows["source_uri"], "source": rows["source"], "source_metadata": rows["source_metadata"],
               "reason": reason, "message": message,
               "duplicate_of": duplicate_of if duplicate_of is not None else pa.nulls(n, pa.string()),
               "sha256": rows["sha256"], "bytes": rows["bytes"], "stage": pa.array([stage] * n, pa.string())}
    return pa.table(columns).cast(tables.REJECTS)


def _first_of_each(keys: pa.ChunkedArray) -> np.ndarray:
    """Row of the first occurrence of each row's key (keys in their order)."""
    n = len(keys)
    firsts = pa.table({"k": keys, "i": pa.array(np.arange(n, dtype=np.int64))}).group_by(
        "k", use_threads=False).aggregate([("i", "min")])
    return np.asarray(firsts["i_min"].take(pc.index_in(keys, value_set=firsts["k"])))


def _dedup(ok: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The rows kept (first in source_uri order of each content hash, in video_id order) and the duplicates'
    reject rows, as `manifest._dedup` makes them."""
    ok = ok.sort_by("source_uri")
    first = _first_of_each(ok["sha256"])
    is_first = first == np.arange(ok.num_rows)
    dups = ok.filter(pa.array(~is_first))
    kept_uri = ok["source_uri"].take(first[~is_first])
    kept_id = ok["video_id"].take(first[~is_first])
    message = pc.binary_join_element_wise("same bytes as ", kept_uri, " (kept as video_id ", kept_id, ")", "")
    reason = pa.array([reasons.DUPLICATE] * dups.num_rows, pa.string())
    return ok.filter(pa.array(is_first)).sort_by("video_id"), _rejects(dups, reason, message, "dedup", kept_id)


def _estimated_sizes(ctx: StageContext, videos: pa.Table) -> Iterator[int]:
    """`sharding.estimated_bytes` of each video, a batch of rows at a time (with the frames payload, the frame count
    of the frames stage's plan is made and dropped)."""
    sh = ctx.cfg.shard
    stages = ctx.cfg.sampling.stages
    frames = sh.payload == "frames" and sh.frames_stage in stages
    columns = ["bytes", "width", "height", "reader_num_frames", "reader_fps"]
    for batch in videos.select(columns).to_batches(layout.MANIFEST_BATCH_ROWS):
        for v in batch.to_pylist():
            v["sampling"] = (sampling.plan(v["reader_num_frames"], v["reader_fps"],
                                           {sh.frames_stage: stages[sh.frames_stage]}, ctx.cfg.sampling.clip_len)
                             if frames else [])
            yield sharding.estimated_bytes(v, sh.payload, sh.frames_stage)


@dataclass
class Probed:
    """The crawl list and its committed probe parts, deduplicated: what the `scenes` stage scans and the plan starts
    from."""
    crawl_uris: pa.ChunkedArray
    accepted: pa.Table  # probe rows (PROBE_COLUMNS) that passed probe and dedup, in video_id order
    rejects: list[pa.Table]  # tables.REJECTS rows of probe failures and duplicates
    probe_pending: int = 0

    @property
    def complete(self) -> bool:
        return self.probe_pending == 0


def sorted_crawl(ctx: StageContext, columns: list[str] | None = None) -> pa.Table:
    """The crawl list (`columns`, or all) in source_uri order: the order of the probe parts' keys."""
    crawl = storage.read_parquet(ctx.require(layout.MANIFEST_CRAWL, "crawl"), columns)
    return crawl.take(pc.sort_indices(crawl["source_uri"]))


def probed(ctx: StageContext) -> Probed:
    crawl_uris = sorted_crawl(ctx, ["source_uri"])["source_uri"]
    probe_spans = parts.part_spans(crawl_uris, ctx.cfg.probe.part_size, manifest.probe_settings(ctx))
    rows, probe_pending = _read_parts(ctx, layout.PROBE_PARTS_DIR, probe_spans, tables.PROBE_PART, PROBE_COLUMNS)
    ok = pc.fill_null(rows["ok"], False)
    probe_rejects = rows.filter(pc.invert(ok))
    rejects = [_rejects(probe_rejects, probe_rejects["reason"], probe_rejects["message"], "probe")]
    accepted, duplicates = _dedup(rows.filter(ok))
    rejects.append(duplicates)
    return Probed(crawl_uris, accepted, rejects, probe_pending)


def scene_spans(ctx: StageContext, accepted: pa.Table) -> list[tuple[str, int, int]]:
    """(name, first row, end row) of the scene parts over the accepted videos (in video_id order)."""
    return parts.part_spans(accepted["video_id"], ctx.cfg.scenes.part_size, manifest.scenes_settings(ctx))


def build(ctx: StageContext) -> Plan:
    p = probed(ctx)
    accepted, rejects = p.accepted, list(p.rejects)
    ids = accepted["video_id"]
    scenes, scenes_pending = _read_parts(ctx, layout.SCENES_PARTS_DIR, scene_spans(ctx, accepted),
                                         tables.SCENES_PART, SCENE_COLUMNS)
    at = pc.index_in(ids, value_set=scenes["video_id"])
    scene_rows = scenes.take(at)  # all-null rows where the scene part is not committed
    failed = pc.and_(pc.is_valid(at), pc.invert(pc.fill_null(scene_rows["ok"], False)))
    failed_rows = accepted.filter(failed)
    failed_scenes = scene_rows.filter(failed)
    rejects.append(_rejects(failed_rows, failed_scenes["reason"], failed_scenes["message"], "scenes"))
    keep = pc.invert(failed)
    videos = accepted.filter(keep)
    videos = pa.Table.from_arrays([videos[n] for n in CARRIED] + [scene_rows["scenes"].filter(keep)],
                                  schema=pa.schema([tables.VIDEOS.field(n) for n in CARRIED + ["scenes"]]))

    all_rejects = pa.concat_tables(rejects)
    plan = Plan(p.crawl_uris, videos, all_rejects.take(pc.sort_indices(all_rejects["source_uri"])).combine_chunks(),
                p.probe_pending, scenes_pending)
    sh = ctx.cfg.shard
    plan.shards = [(k, a, b) for k, (a, b) in
                   enumerate(sharding.spans(_estimated_sizes(ctx, videos), sh.target_bytes, sh.max_samples))]
    return plan


def partitions(plan: Plan, shards_per_partition: int) -> Iterator[Partition]:
    for p, first in enumerate(range(0, len(plan.shards), shards_per_partition)):
        group = plan.shards[first:first + shards_per_partition]
        start, stop = group[0][1], group[-1][2]
        yield Partition(p, plan.videos.slice(start, stop - start),
                        [(k, a - start, b - start) for k, a, b in group])


def partition_videos(part: Partition, ctx: StageContext) -> list[tuple[int, list[dict], str]]:
    """(shard index, manifest rows, content digest) of each shard of a partition: the rows as
    `manifest.assemble` makes them (sampling plans added, `shard` not set yet)."""
    stages = ctx.cfg.sampling.stages
    settings = manifest.payload_settings(ctx)
    out = []
    for index, start, stop in part.shards:
        videos = part.videos.slice(start, stop - start).to_pylist()
        for v in videos:
            v["sampling"] = sampling.plan(v["reader_num_frames"], v["reader_fps"], stages, ctx.cfg.sampling.clip_len)
            v["shard"] = None
        digest = sharding.content_digest([manifest.sample_metadata(v) for v in videos], settings)
        out.append((index, videos, digest))
    return out


def partition_result(part: Partition, ctx: StageContext,
                     write_shard: Callable[[tuple[int, list[dict], str], StageContext], dict] | None = None) -> dict:
    """A partition's manifest rows (tables.VIDEOS), shard-reject rows and committed shard records, as
    `manifest.assemble` makes them: a shard whose committed record holds exactly its videos names them (and turns the
    videos it left out into rejects); any other shard is written with `write_shard` (the `shard` stage) or, without
    it, leaves its videos' `shard` unset."""
    records, rows, rejects, written = [], [], [], 0
    for index, videos, digest in partition_videos(part, ctx):
        record = manifest.committed_record(ctx, index, digest)
        if record is None and write_shard is not None:
            record = write_shard((index, videos, digest), ctx)
            written += 1
        if record is None:
            rows += videos
            continue
        left_out = {r["video_id"]: r for r in record.get(sharding.RECORD_REJECTS, ())}
        for v in videos:
            r = left_out.get(v["video_id"])
            if r is not None:  # source gone or changed since probe: a reject row (stage "shard")
                rejects.append(manifest.reject_row(v, r["reason"], r["message"], "shard"))
                continue
            v["shard"] = record["shard"]
            rows.append(v)
        records.append({k: record[k] for k in ("shard", "nsamples", "filesize", "sha256")})
    return {"records": records, "written": written, "videos": tables.to_table(rows, tables.VIDEOS),
            "rejects": rejects}


def check_partition(part: Partition, ctx: StageContext) -> dict:
    """One Ray task: `partition_result` without writing shards (the manifest after `probe` or `scenes`)."""
    configure_worker(ctx.cfg)
    return partition_result(part, ctx)


@dataclass
class Outcome:
    records: list[dict] = field(default_factory=list)  # committed shard records, in shard order
    left_out: list[dict] = field(default_factory=list)  # reject rows of videos a committed shard left out
    written: int = 0  # shards written
    sharded: int = 0  # videos in a committed shard


def run_partitions(ctx: StageContext, plan: Plan, stage: str, task: Callable[[Partition, StageContext], dict],
                   shards_per_partition: int, out: "VideosWriter | None") -> Outcome:
    """`task` over the plan's partitions (a bounded number in flight), the manifest rows fed to `out` in order; the
    left-out videos move from the plan's videos to its rejects."""
    o = Outcome()
    for r in ray_runtime.imap_units(stage, task, partitions(plan, shards_per_partition), (ctx,), "videos",
                                    total_items=plan.videos.num_rows, items_of=lambda p: p.videos.num_rows):
        if out is not None:
            out.add(r["videos"])
        o.sharded += r["videos"].num_rows - r["videos"]["shard"].null_count
        o.records += r["records"]
        o.left_out += r["rejects"]
        o.written += r["written"]
    add_shard_rejects(plan, o.left_out)
    return o


def add_shard_rejects(plan: Plan, rows: list[dict]) -> None:
    """Videos the shard tasks left out (source gone or changed since probe; a few rows) move from the videos to the
    rejects, which stay in source_uri order."""
    if not rows:
        return
    out = pa.array([r["source_uri"] for r in rows], pa.string())
    plan.videos = plan.videos.filter(pc.invert(pc.is_in(plan.videos["source_uri"], value_set=out)))
    rejects = pa.concat_tables([plan.rejects, tables.to_table(rows, tables.REJECTS)])
    plan.rejects = rejects.take(pc.sort_indices(rejects["source_uri"])).combine_chunks()


def reconcile(plan: Plan) -> None:
    """Every input is in exactly one of the two tables (`manifest.reconcile`, over columns)."""
    seen = pa.chunked_array(plan.videos["source_uri"].chunks + plan.rejects["source_uri"].chunks, pa.string())
    counts = pc.value_counts(seen)
    twice = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    lost = plan.crawl_uris.filter(pc.invert(pc.is_in(plan.crawl_uris, value_set=seen)))
    distinct = counts.field("values")
    extra = distinct.filter(pc.invert(pc.is_in(distinct, value_set=plan.crawl_uris)))
    if len(twice) or len(lost) or len(extra):
        examples = sorted(set(lost.to_pylist()[:3] + twice.to_pylist()[:3] + extra.to_pylist()[:3]))[:3]
        raise manifest.ReconcileError(
            f"manifest does not reconcile: {len(lost)} inputs in neither table, {len(twice)} listed twice, "
            f"{len(extra)} not in the crawl list (e.g. {examples})")


class VideosWriter:
    """manifest/videos.parquet written as the rows arrive, in row groups of VIDEOS_ROWS_PER_GROUP (the bytes a
    whole-table write gives while the build fits one group)."""

    def __init__(self, path: str):
        self.writer = pq.ParquetWriter(path, tables.VIDEOS, compression="zstd")
        self.pending: list[pa.Table] = []
        self.rows = 0
        self.written = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        while self.rows >= VIDEOS_ROWS_PER_GROUP:
            self._flush(VIDEOS_ROWS_PER_GROUP)

    def _flush(self, n: int) -> None:
        buffered = pa.concat_tables(self.pending)
        self.writer.write_table(buffered.slice(0, n).combine_chunks(), row_group_size=VIDEOS_ROWS_PER_GROUP)
        rest = buffered.slice(n)
        self.pending = [rest] if rest.num_rows else []
        self.rows -= n
        self.written += n

    def close(self) -> None:
        if self.rows:
            self._flush(self.rows)
        elif not self.written:  # as a whole-table write of no rows
            self.writer.write_table(tables.empty(tables.VIDEOS))
        self.writer.close()


@contextmanager
def videos_writer(ctx: StageContext) -> Iterator[VideosWriter]:
    """A VideosWriter on a local file, committed to manifest/videos.parquet on clean exit when its bytes changed."""
    with storage.local_output_if_changed(ctx.uri(layout.MANIFEST_VIDEOS)) as path:
        writer = VideosWriter(path)
        try:
            yield writer
        finally:
            writer.close()


def write_rejects(ctx: StageContext, plan: Plan) -> None:
    storage.write_parquet(ctx.uri(layout.MANIFEST_REJECTS), plan.rejects)
