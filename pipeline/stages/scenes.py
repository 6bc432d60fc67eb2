"""scenes: shot boundaries for every accepted video, in resumable parts; the manifest gains scenes and sampling plans."""

from __future__ import annotations

from pipeline import manifest, ray_runtime, scenes, shot_parallel, storage
from pipeline.context import StageContext, configure_worker
from pipeline.isolated import IsolatedFailure, IsolatedWorker
from pipeline.errors import Rejection
from pipeline.shot_frames import ShotDecodeError
from pipeline.video_record import local_copy_checked
from schemas import layout, reasons, tables

NAME = "scenes"
DESCRIPTION = "shot boundaries (fast, TransNetV2 or PySceneDetect) and per-stage sampling plans"


def detect(path: str, duration_s: float, s, worker: IsolatedWorker, pool: list | None) -> list[dict]:
    """Scenes of one local video with the configured detector; raises IsolatedFailure or ShotDecodeError."""
    if s.detector == scenes.FAST:
        times = shot_parallel.fast_times(path, duration_s, s.threshold, s.min_scene_len_s, s.segment_s, s.timeout_s)
        return scenes.contiguous(times, duration_s)
    if s.detector == scenes.TRANSNET:
        times = shot_parallel.transnet_times(path, duration_s, s.threshold, s.min_scene_len_s, s.segment_s, pool,
                                             s.timeout_s)
        return scenes.contiguous(times, duration_s)
    return worker.call("scenes", s.timeout_s, path=path, duration_s=duration_s, detector=s.detector,
                       threshold=s.threshold, min_scene_len_s=s.min_scene_len_s, downscale=s.downscale)


def scenes_part(unit: tuple[str, list[dict]], ctx: StageContext, pool: list | None = None) -> dict:
    uri, videos = unit
    configure_worker(ctx.cfg)
    s = ctx.cfg.scenes
    rows = []
    with IsolatedWorker() as worker:
        for v in videos:
            row = {"video_id": v["video_id"], "ok": True, "reason": None, "message": None, "scenes": None}
            try:
                with local_copy_checked(v["source_uri"], v["sha256"], ctx.cfg) as path:
                    row["scenes"] = detect(path, v["duration_s"], s, worker, pool)
            except (IsolatedFailure, ShotDecodeError) as e:
                reason = e.reason if e.reason in reasons.ALL else reasons.UNREADABLE
                row.update(ok=False, reason=reason, message=f"scene detection failed: {e.message}")
            except Rejection as e:  # this input only (gone or changed since probe); storage outages still raise
                row.update(ok=False, reason=e.reason, message=f"cannot read the source for scene detection: {e.message}")
            rows.append(row)
    storage.write_parquet(uri, tables.to_table(rows, tables.SCENES_PART))
    return {"ok": sum(r["ok"] for r in rows)}


def run(ctx: StageContext) -> dict:
    m = manifest.assemble(ctx)
    manifest.require_probed(m)
    by_id = {v["video_id"]: v for v in m.candidates}
    storage.remove_stale_temporaries(ctx.uri(layout.SCENES_PARTS_DIR))
    units = []
    committed = manifest.committed_parts(ctx, layout.SCENES_PARTS_DIR)
    for part in manifest.scenes_parts(ctx, list(by_id)):
        if part.name not in committed:
            units.append((manifest.part_uri(ctx, layout.SCENES_PARTS_DIR, part), [by_id[k] for k in part.keys]))
    pool = None
    if units and ctx.cfg.scenes.detector == scenes.TRANSNET:
        pool = shot_parallel.transnet_pool(ctx.cfg.scenes.actors, ctx.cfg.scenes.num_gpus)
    try:
        ray_runtime.map_units(NAME, scenes_part, units, (ctx, pool), "videos",
                              total_items=sum(len(u[1]) for u in units), items_of=lambda u: len(u[1]))
    finally:
        shot_parallel.release_pool(pool)
    m = manifest.assemble(ctx)
    manifest.write(ctx, m)
    return {"videos": len(m.videos), "scenes": sum(len(v["scenes"] or []) for v in m.videos)}
