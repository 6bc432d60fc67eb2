"""shard: WebDataset tars of the accepted videos (original bytes + metadata JSON, optionally sampled frames)."""

from __future__ import annotations

import json
import logging
import os

from pipeline.core import orphans, ray_runtime
from pipeline.core.context import StageContext, configure_worker
from pipeline.core.errors import Rejection
from pipeline.ingest import manifest, sharding
from pipeline.ingest.video_record import local_copy_checked
from pipeline.io import frames as frame_io
from pipeline.io import storage
from schemas import hashing, layout
from schemas import sample as sample_schema

log = logging.getLogger(__name__)

NAME = "shard"
DESCRIPTION = "WebDataset tars sorted by video_id, committed atomically, with a wids index"


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


def run(ctx: StageContext) -> dict:
    m = manifest.assemble(ctx)
    manifest.require_probed(m)
    if m.scenes_pending:
        log.info(f"[shard] note: {m.scenes_pending} videos have no scenes yet (run the `scenes` stage to add them)")
    records = [s.record for s in m.shards if s.record is not None]
    units = [(s.plan.index, s.plan.videos, s.digest) for s in m.shards if s.record is None]
    if records:
        log.info(f"[shard] {len(records)} shards already committed, {len(units)} to write")
    storage.remove_stale_temporaries(ctx.uri(layout.SHARDS_DIR))
    records += ray_runtime.map_units(NAME, write_shard, units, (ctx,), "videos",
                                     total_items=sum(len(u[1]) for u in units), items_of=lambda u: len(u[1]))
    records.sort(key=lambda r: r["shard"])
    left_out = sum(len(r.get(sharding.RECORD_REJECTS, ())) for r in records)
    if left_out:
        log.warning(f"[shard] {left_out} videos rejected: their source is gone or changed since probe (see "
                    f"{layout.MANIFEST_REJECTS}, stage 'shard')")
    index_doc = sharding.wids_index(records)
    storage.write_bytes_if_changed(ctx.uri(layout.SHARD_INDEX), json.dumps(index_doc, indent=1).encode())
    planned = [s.plan.name for s in m.shards]
    orphans.report(NAME, orphans.remove_unplanned(ctx, layout.SHARDS_DIR, ".tar", planned)
                   + orphans.remove_unplanned(ctx, layout.SHARD_RECORDS_DIR, ".json", planned))
    manifest.write(ctx, manifest.assemble(ctx))
    return {"shards": len(records), "shard_bytes": sum(r["filesize"] for r in records),
            "samples": sum(r["nsamples"] for r in records)}
