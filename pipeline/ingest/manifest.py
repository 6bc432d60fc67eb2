"""The manifest from committed work units: crawl list → probe parts → dedup → scene parts → sampling plans → shard
records. The `probe`, `scenes` and `shard` stages rewrite `manifest/videos.parquet` and `manifest/rejects.parquet`
from what is committed (over Arrow columns: pipeline/ingest/shard_plan.py), so the tables always describe the output
folder as it is, and an unchanged rerun rewrites no byte. This module holds the settings, part names and row helpers
they share, and `assemble`, the row-by-row reference the tests compare them with.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from pipeline import sampling
from pipeline.core import committed, parts
from pipeline.core.context import StageContext, StageInputMissing
from pipeline.ingest import sharding
from pipeline.io import storage
from schemas import layout, reasons, tables
from schemas.errors import LongVidError


def probe_settings(ctx: StageContext) -> dict:
    p = ctx.cfg.probe
    return {"min_duration_s": p.min_duration_s, "max_duration_s": p.max_duration_s, "max_pixels": p.max_pixels,
            "max_bytes": p.max_bytes, "check_integrity": p.check_integrity}


def scenes_settings(ctx: StageContext) -> dict:
    s = ctx.cfg.scenes
    return {"detector": s.detector, "threshold": s.threshold, "min_scene_len_s": s.min_scene_len_s,
            "downscale": s.downscale}


def probe_parts(ctx: StageContext, crawl_rows: list[dict]) -> list[parts.Part]:
    return parts.plan_parts([r["source_uri"] for r in crawl_rows], ctx.cfg.probe.part_size, probe_settings(ctx))


def scenes_parts(ctx: StageContext, video_ids: list[str]) -> list[parts.Part]:
    return parts.plan_parts(video_ids, ctx.cfg.scenes.part_size, scenes_settings(ctx))


def part_uri(ctx: StageContext, directory: str, part: parts.Part) -> str:
    return ctx.uri(f"{directory}/{part.name}")


def committed_parts(ctx: StageContext, directory: str) -> dict[str, tuple[str, int]]:
    """part file name -> (URI, size) of the parts committed in `directory` (one listing; temporaries skipped)."""
    return {rel: (uri, size) for rel, uri, size in storage.list_committed(ctx.uri(directory)) if "/" not in rel}


def read_part(uri: str) -> list[dict]:
    return storage.read_parquet(uri).to_pylist()


def read_crawl(ctx: StageContext) -> list[dict]:
    return storage.read_parquet(ctx.require(layout.MANIFEST_CRAWL, "crawl")).to_pylist()


class ArrowRows:
    """A part's rows handed to its Ray task as an Arrow table (Ray sends only the slice's rows) and iterated there as
    dicts, one batch at a time: the driver makes no Python object per row."""

    def __init__(self, table):
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self):
        for batch in self.table.to_batches():
            yield from batch.to_pylist()


@dataclass
class PlannedShard:
    plan: sharding.ShardPlan
    digest: str  # of the sample documents and payload settings it must hold
    record: dict | None  # the committed shard's record, when it holds exactly that


@dataclass
class Manifest:
    crawl: list[dict]
    candidates: list[dict] = field(default_factory=list)  # probe rows that passed probe and dedup
    videos: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    probe_pending: int = 0  # inputs whose probe part is not committed yet
    scenes_pending: int = 0  # accepted videos whose scene part is not committed yet
    shards: list["PlannedShard"] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.probe_pending == 0

    def reject_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r["reason"] for r in self.rejects).items()))


def reject_row(row: dict, reason: str, message: str, stage: str, duplicate_of: str | None = None) -> dict:
    return {"source_uri": row["source_uri"], "source": row.get("source"), "source_metadata": row.get("source_metadata"),
            "reason": reason, "message": message, "duplicate_of": duplicate_of, "sha256": row.get("sha256"),
            "bytes": row.get("bytes"), "stage": stage}


def _dedup(probed_ok: list[dict]) -> tuple[list[dict], list[dict]]:
    kept: dict[str, dict] = {}
    rejects = []
    for row in sorted(probed_ok, key=lambda r: r["source_uri"]):
        first = kept.get(row["sha256"])
        if first is None:
            kept[row["sha256"]] = row
        else:
            rejects.append(reject_row(row, reasons.DUPLICATE, f"same bytes as {first['source_uri']} "
                                   f"(kept as video_id {first['video_id']})", "dedup", first["video_id"]))
    return sorted(kept.values(), key=lambda r: r["video_id"]), rejects


def assemble(ctx: StageContext) -> Manifest:
    """The manifest row by row, every part read here: the reference the tests check the column path with
    (pipeline/ingest/shard_plan.py, manifest_refresh.py). No stage or summary calls it; it holds a Python dict and a
    sampling plan per video."""
    crawl_rows = read_crawl(ctx)
    m = Manifest(crawl=crawl_rows)
    probed = []
    committed = committed_parts(ctx, layout.PROBE_PARTS_DIR)
    for part in probe_parts(ctx, crawl_rows):
        if part.name in committed:
            probed.extend(read_part(committed[part.name][0]))
        else:
            m.probe_pending += len(part.keys)
    m.rejects = [reject_row(r, r["reason"], r["message"], "probe") for r in probed if not r["ok"]]
    accepted, duplicates = _dedup([r for r in probed if r["ok"]])
    m.rejects += duplicates
    m.candidates = accepted

    scenes_by_id: dict[str, dict] = {}
    committed = committed_parts(ctx, layout.SCENES_PARTS_DIR)
    for part in scenes_parts(ctx, [r["video_id"] for r in accepted]):
        if part.name in committed:
            scenes_by_id.update({r["video_id"]: r for r in read_part(committed[part.name][0])})
        else:
            m.scenes_pending += len(part.keys)

    stages = ctx.cfg.sampling.stages
    for row in accepted:
        scene_row = scenes_by_id.get(row["video_id"])
        if scene_row is not None and not scene_row["ok"]:
            m.rejects.append(reject_row(row, scene_row["reason"], scene_row["message"], "scenes"))
            continue
        video = {name: row.get(name) for name in tables.VIDEOS.names}
        video["scenes"] = scene_row["scenes"] if scene_row else None
        video["sampling"] = sampling.plan(row["reader_num_frames"], row["reader_fps"], stages,
                                          ctx.cfg.sampling.clip_len)
        video["shard"] = None
        m.videos.append(video)
    m.rejects.sort(key=lambda r: r["source_uri"])
    _plan_shards(ctx, m)
    return m


def payload_settings(ctx: StageContext) -> dict:
    sh = ctx.cfg.shard
    settings = {"payload": sh.payload}
    if sh.payload == "frames":
        settings.update(frames_stage=sh.frames_stage, jpeg_quality=sh.jpeg_quality)
    return settings


def committed_record(ctx: StageContext, index: int, digest: str) -> dict | None:
    """The shard's committed record when its tar and record exist and the record names `digest`; else None."""
    return committed.committed_record(ctx.uri(layout.shard_record_path(index)), digest,
                                      [ctx.uri(layout.shard_path(index))], key="content_digest")


def _plan_shards(ctx: StageContext, m: Manifest) -> None:
    """Shard assignment of the accepted videos; videos in a committed, matching shard get its name."""
    sh = ctx.cfg.shard
    settings = payload_settings(ctx)
    for plan in sharding.assign(m.videos, sh.target_bytes, sh.max_samples, sh.payload, sh.frames_stage):
        digest = sharding.content_digest([sample_metadata(v) for v in plan.videos], settings)
        record = committed_record(ctx, plan.index, digest)
        if record is not None:
            _drop_shard_rejects(m, plan, record)
            for v in plan.videos:
                v["shard"] = record["shard"]
        m.shards.append(PlannedShard(plan, digest, record))


def _drop_shard_rejects(m: Manifest, plan: sharding.ShardPlan, record: dict) -> None:
    """Videos the committed shard could not take (source gone or changed since probe) become reject rows; the
    plan keeps its digest, so the decision holds on every rerun until the shard is removed."""
    rejected = {r["video_id"]: r for r in record.get(sharding.RECORD_REJECTS, ())}
    if not rejected:
        return
    for v in plan.videos:
        r = rejected.get(v["video_id"])
        if r is not None:
            m.rejects.append(reject_row(v, r["reason"], r["message"], "shard"))
    plan.videos = [v for v in plan.videos if v["video_id"] not in rejected]
    m.videos = [v for v in m.videos if v["video_id"] not in rejected]
    m.rejects.sort(key=lambda r: r["source_uri"])


def plan_frame_counts(sampling) -> list[list[tuple[str, int]]]:
    """(stage, sampled frames) of every video's sampling plans (an Arrow column of tables.SAMPLING_PLAN lists),
    counted with Arrow: the frame lists never become Python objects."""
    import pyarrow.compute as pc

    out = []
    for chunk in sampling.chunks:
        flat = pc.list_flatten(chunk)
        stages = flat.field("stage").to_pylist()
        counts = pc.list_value_length(flat.field("frame_indices")).to_pylist()
        offsets = pc.list_value_length(chunk).to_pylist()
        k = 0
        for n in offsets:
            n = n or 0
            out.append(list(zip(stages[k:k + n], counts[k:k + n])))
            k += n
    return out


class ReconcileError(LongVidError, RuntimeError):
    pass


def require_probed(m) -> None:
    """`m`: anything with `complete` and `probe_pending` (the column plan, the probed table or a Manifest)."""
    if not m.complete:
        raise StageInputMissing(f"{m.probe_pending} inputs have not been probed yet: run the `probe` stage")


def sample_metadata(video: dict) -> dict:
    """The per-sample JSON document: the manifest row with the carried columns and plans made readable."""
    doc = {k: v for k, v in video.items() if k not in ("source_metadata", "sampling", "shard")}
    doc["source_metadata"] = json.loads(video["source_metadata"] or "{}")
    doc["sampling"] = {p["stage"]: {k: v for k, v in p.items() if k != "stage"} for p in video["sampling"]}
    doc["key"] = video["video_id"]
    doc["video_field"] = video["extension"]
    return doc
