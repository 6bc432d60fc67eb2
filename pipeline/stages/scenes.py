"""scenes: shot boundaries for every accepted video, in resumable parts; the manifest gains scenes and sampling plans.

With the `fast` detector the driver splits every video longer than `scenes.segment_s` into segments (from the
probed duration) and runs each as a task of its own, beside the part tasks; a part's task starts once its videos'
segments are done and stitches them in order (pipeline.ingest.shots.segments), so one long video spreads over all CPUs.
A split video's source is fetched and verified once, by a task that starts its segments (pipeline.ingest.stage_in).
"""

from __future__ import annotations

import contextlib
import functools

from pipeline.core import ray_runtime, tempdirs
from pipeline.core.context import StageContext, configure_worker
from pipeline.core.errors import Rejection
from pipeline.ingest import manifest, manifest_refresh, plan_rows, scenes, shard_plan, stage_in
from pipeline.ingest.isolated import IsolatedFailure, IsolatedWorker
from pipeline.ingest.shots import frames as shot_frames
from pipeline.ingest.shots import parallel as shot_parallel
from pipeline.ingest.shots import segments as shot_segments
from pipeline.ingest.shots.frames import ShotDecodeError
from pipeline.ingest.video_record import local_copy_checked
from pipeline.io import storage
from schemas import layout, reasons, tables

NAME = "scenes"
DESCRIPTION = "shot boundaries (fast, TransNetV2 or PySceneDetect) and per-stage sampling plans"


def segments_of(duration_s: float, s) -> list[shot_segments.Segment]:
    """The fast detector's segments of one video (one segment: scored inside its part's task)."""
    return shot_segments.plan(duration_s, s.segment_s, shot_frames.FrameSpec().rate)


def scenes_segment(video: dict, start_s: float, end_s: float, ctx: StageContext,
                   copy: stage_in.Staged | None = None) -> dict:
    """One segment's fast boundary times {"times"}, or its reject {"reason", "message", "decode"} (decode: False when
    the source itself could not be read). `copy`: the video's staged copy (read when this task runs on its node)."""
    configure_worker(ctx.cfg)
    s = ctx.cfg.scenes
    try:
        with stage_in.segment_source(video, copy, ctx.cfg) as path:
            found = scenes.fast_cut_times(path, start_s, end_s, s.threshold, s.min_scene_len_s, s.timeout_s)
    except Rejection as e:  # this input only; storage outages still raise
        return segment_reject(e)
    return {"times": [b["time_s"] for b in found]}


def segment_reject(e: Rejection) -> dict:
    return {"reason": e.reason, "message": e.message, "decode": isinstance(e, ShotDecodeError)}


def scenes_split(video: dict, segments: list[shot_segments.Segment], ctx: StageContext) -> list[dict]:
    """A split video's segment results in order: its source fetched and verified once here, its segment tasks run
    on this node (soft affinity: elsewhere, they fetch it themselves) while this task waits, the copy removed when
    they are done. A source that cannot be read (gone, changed since probe, too large) is one reject result."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    configure_worker(ctx.cfg)
    with contextlib.ExitStack() as stack:
        try:
            copy = stack.enter_context(stage_in.staged(video, ctx.cfg))
        except Rejection as e:  # this input only; storage outages still raise
            return [segment_reject(e)]
        task = _segment_task().options(scheduling_strategy=NodeAffinitySchedulingStrategy(copy.node_id, soft=True))
        ctx_ref = ray.put(ctx)
        return ray.get([task.remote(video, g.start_s, g.end_s, ctx_ref, copy) for g in segments])


@functools.cache
def _segment_task():
    import ray

    return ray.remote(num_cpus=1, max_retries=2)(tempdirs.released(scenes_segment))


def stitched(parts: list[dict], duration_s: float, s) -> list[dict]:
    """Scenes from a video's segment results in order; the first failed segment's reject is raised."""
    for part in parts:
        if "reason" in part:
            raise (ShotDecodeError if part["decode"] else Rejection)(part["reason"], part["message"])
    return scenes.contiguous(shot_segments.stitch([p["times"] for p in parts], s.min_scene_len_s), duration_s)


def detect(path: str, duration_s: float, s, worker: IsolatedWorker, pool: list | None) -> list[dict]:
    """Scenes of one local video with the configured detector; raises IsolatedFailure or ShotDecodeError."""
    if s.detector == scenes.FAST:
        found = scenes.fast_cut_times(path, threshold=s.threshold, min_scene_len_s=s.min_scene_len_s,
                                      timeout_s=s.timeout_s)
        return scenes.contiguous([b["time_s"] for b in found], duration_s)
    if s.detector == scenes.TRANSNET:
        times = shot_parallel.transnet_times(path, duration_s, s.threshold, s.min_scene_len_s, s.segment_s, pool,
                                             s.timeout_s)
        return scenes.contiguous(times, duration_s)
    return worker.call("scenes", s.timeout_s, path=path, duration_s=duration_s, detector=s.detector,
                       threshold=s.threshold, min_scene_len_s=s.min_scene_len_s, downscale=s.downscale)


def scenes_part(unit: tuple[str, list[dict]], ctx: StageContext, pool: list | None = None, *split_results) -> dict:
    """One part's rows; `split_results` are its split videos' segment results (scenes_split), in video order."""
    uri, videos = unit
    configure_worker(ctx.cfg)
    s = ctx.cfg.scenes
    rows = []
    results = iter(split_results)
    with IsolatedWorker() as worker:
        for v in videos:
            row = {"video_id": v["video_id"], "ok": True, "reason": None, "message": None, "scenes": None}
            try:
                count = len(segments_of(v["duration_s"], s)) if s.detector == scenes.FAST else 1
                if count > 1:
                    row["scenes"] = stitched(next(results), v["duration_s"], s)
                    rows.append(row)
                    continue
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
    units = pending_units(ctx)
    pool = None
    if units and ctx.cfg.scenes.detector == scenes.TRANSNET:
        pool = shot_parallel.transnet_pool(ctx.cfg.scenes.actors, ctx.cfg.scenes.num_gpus)
    segment_refs = segment_tasks(units, ctx) if ctx.cfg.scenes.detector == scenes.FAST else {}
    try:
        ray_runtime.map_units(NAME, scenes_part, units, (ctx, pool), "videos",
                              total_items=sum(len(u[1]) for u in units), items_of=lambda u: len(u[1]),
                              inputs_of=lambda u: segment_refs.get(u[0], ()))
    finally:
        shot_parallel.release_pool(pool)
    units.clear()  # the part rows and segment results are not needed past here
    segment_refs.clear()
    stats, plan = manifest_refresh.refresh(ctx, NAME)
    ctx.manifest_summary = stats
    return {"videos": stats["accepted"], "scenes": manifest_refresh.scene_count(plan)}


def pending_units(ctx: StageContext) -> list[tuple[str, plan_rows.StoredRows]]:
    """(URI, probe rows) of each scene part over the accepted videos (video_id order) not committed yet. The scan
    keeps a few fixed-width keys per video in the driver; the rows stay in the object store (shard_plan)."""
    todo = shard_plan.scenes_todo(ctx)
    manifest.require_probed(todo)
    storage.remove_stale_temporaries(ctx.uri(layout.SCENES_PARTS_DIR))
    return [(ctx.uri(f"{layout.SCENES_PARTS_DIR}/{name}"), rows) for name, rows in
            shard_plan.pending_scene_parts(ctx, todo)]


def segment_tasks(units: list[tuple[str, list[dict]]], ctx: StageContext) -> dict[str, list]:
    """Start a scenes_split task per split video; {part uri: their ObjectRefs in video order}.

    The segments must run where the video's one copy is, a node known only once the copy is made, so the task that
    makes it starts them and waits for them: the driver never waits on a video, and the part's task gets the
    segment results as one argument. A task waiting in ray.get frees its CPU for the segments, and Ray starts more
    tasks of a kind whose tasks wait only slowly beyond one per CPU, so about a CPU's worth of copies per node are
    on disk at a time, as when every segment fetched its own."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=2)(tempdirs.released(scenes_split))
    ctx_ref = None
    refs: dict[str, list] = {}
    for uri, videos in units:
        for v in videos:
            segments = segments_of(v["duration_s"], ctx.cfg.scenes)
            if len(segments) < 2:
                continue
            ctx_ref = ctx_ref or ray.put(ctx)
            refs.setdefault(uri, []).append(remote.remote(v, segments, ctx_ref))
    return refs
