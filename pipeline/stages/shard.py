"""shard: WebDataset tars of the accepted videos (original bytes + metadata JSON, optionally sampled frames)."""

from __future__ import annotations

import json
import logging
import os

from pipeline.core import orphans
from pipeline.core.context import StageContext, configure_worker
from pipeline.core.errors import Rejection
from pipeline.ingest import manifest, shard_plan, sharding
from pipeline.ingest.video_record import local_copy_checked
from pipeline.io import frames as frame_io
from pipeline.io import storage
from schemas import hashing, layout
from schemas import sample as sample_schema

log = logging.getLogger(__name__)

NAME = "shard"
DESCRIPTION = "WebDataset tars sorted by video_id, committed atomically, with a wids index"
SHARDS_PER_TASK = 1  # a shard's tar is the unit of work; the plan reaches the tasks a partition at a time


def _frames_for(path: str, video: dict, ctx: StageContext) -> list[bytes]:
    sh = ctx.cfg.shard
    plan = next(p for p in video["sampling"] if p["stage"] == sh.frames_stage)
    frames = frame_io.read_frames(path, plan["frame_indices"])
    return [frame_io.encode_jpeg(f, sh.jpeg_quality) for f in frames]


def write_shard(unit: tuple[int, list[dict], str], ctx: StageContext) -> dict:
    """One Ray task: write one tar under a temporary name, commit it, then commit its record."""
    index, videos, digest = unit
    configure_worker(ctx.cfg)
    tar_uri = ctx.uri(layout.shard_path(index))
    written, rejects = [], []
    with storage.staged_output(tar_uri) as local_tar:
        writer = sharding.SampleWriter(local_tar)
        try:
            for video in videos:
                doc = manifest.sample_metadata(video)
                if ctx.cfg.shard.payload == "frames":
                    doc[sample_schema.FRAMES_STAGE_KEY] = ctx.cfg.shard.frames_stage
                try:
                    with local_copy_checked(video["source_uri"], video["sha256"], ctx.cfg) as path:
                        jpegs = _frames_for(path, video, ctx) if ctx.cfg.shard.payload == "frames" else None
                        writer.add_sample(video["video_id"], video["extension"], path, doc, jpegs)
                except Rejection as e:  # this input only (gone or changed since probe); storage outages still raise
                    rejects.append({"video_id": video["video_id"], "reason": e.reason,
                                    "message": f"cannot read the source for sharding: {e.message}"})
                    continue
                written.append(video["video_id"])
        finally:
            writer.close()
        record = {"shard": layout.shard_name(index), "nsamples": writer.count, "filesize": os.path.getsize(local_tar),
                  "sha256": hashing.file_sha256(local_tar), "video_ids": written, "content_digest": digest}
        if rejects:  # the planned videos left out; the manifest turns them into reject rows (stage "shard")
            record[sharding.RECORD_REJECTS] = rejects
    storage.write_bytes(ctx.uri(layout.shard_record_path(index)), json.dumps(record, indent=1).encode())
    return record


def write_partition(part: shard_plan.Partition, ctx: StageContext, gathered) -> dict:
    """One Ray task per partition: its shards' manifest rows (sliced from the `gathered` rows), and each shard
    written unless a committed one holds exactly them."""
    configure_worker(ctx.cfg)
    return shard_plan.partition_result(shard_plan.with_videos(part, gathered), ctx, write_shard)


def run(ctx: StageContext) -> dict:
    plan = shard_plan.build(ctx)
    manifest.require_probed(plan)
    if plan.scenes_pending:
        log.info(f"[shard] note: {plan.scenes_pending} videos have no scenes yet (run the `scenes` stage to add them)")
    storage.remove_stale_temporaries(ctx.uri(layout.SHARDS_DIR))
    with shard_plan.videos_writer(ctx) as videos_out:
        outcome = shard_plan.run_partitions(ctx, plan, NAME, write_partition, SHARDS_PER_TASK, videos_out)
        shard_plan.reconcile(plan, outcome)
    shard_plan.write_rejects(ctx, plan)
    records, left_out, written = outcome.records, outcome.left_out, outcome.written
    if written < len(records):
        log.info(f"[shard] {len(records) - written} shards already committed, {written} written")
    if left_out:
        log.warning(f"[shard] {len(left_out)} videos rejected: their source is gone or changed since probe (see "
                    f"{layout.MANIFEST_REJECTS}, stage 'shard')")
    index_doc = sharding.wids_index(records)
    storage.write_bytes_if_changed(ctx.uri(layout.SHARD_INDEX), json.dumps(index_doc, indent=1).encode())
    planned = [r["shard"] for r in records]
    orphans.report(NAME, orphans.remove_unplanned(ctx, layout.SHARDS_DIR, ".tar", planned)
                   + orphans.remove_unplanned(ctx, layout.SHARD_RECORDS_DIR, ".json", planned))
    return {"shards": len(records), "shard_bytes": sum(r["filesize"] for r in records),
            "samples": sum(r["nsamples"] for r in records)}
