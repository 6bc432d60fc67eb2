"""mix: stage-tagged curriculum mixtures — per curriculum stage, LLaVA-NeXT / VideoChat-Flash annotation files
(`<task>.jsonl`), the trainer's `data.yaml`, the WebDataset shard list and task weights for streaming trainers, and
the membership table recording which annotation went where. Media the files point at are materialised once.

Order: select (pure, seeded) → payloads (Ray task per shard, skipped when committed) → serialise every stage's files
in memory → validate them all → commit (only changed files are written) → remove what is no longer referenced."""

from __future__ import annotations

from pipeline import manifest, mix_files, mix_payload, mix_records, mix_select, mix_validate, ray_runtime, storage
from pipeline.context import StageContext, StageInputMissing
from schemas import layout, mixture

NAME = "mix"
DESCRIPTION = "curriculum mixtures (stage1..4): annotation JSONL, data.yaml, shard lists, weights, membership"

ANNOTATION_SOURCES = ("captions", "qa", "grounding")


def _inputs(ctx: StageContext):
    """The manifest's videos with their committed shards, and every annotation row with its source key."""
    m = manifest.assemble(ctx)
    manifest.require_probed(m)
    videos: dict[str, mix_select.VideoInfo] = {}
    shards: dict[str, tuple[str, str]] = {}
    rows: list[mix_select.AnnotationRow] = []
    random_init = False
    for planned in m.shards:
        if planned.record is None:
            raise StageInputMissing(f"shard {planned.plan.name} is not committed: run the `shard` stage first")
        name = planned.plan.name
        shards[name] = (ctx.uri(layout.shard_path(planned.plan.index)), planned.record["sha256"])
        for v in planned.plan.videos:
            videos[v["video_id"]] = mix_select.VideoInfo(v["video_id"], v["extension"], name, v["reader_num_frames"],
                                                         v["reader_fps"])
        for table in ANNOTATION_SOURCES:
            uri = ctx.uri(layout.annotation_path(table, name))
            if not storage.exists(uri):
                raise StageInputMissing(f"{layout.annotation_path(table, name)} is missing under {ctx.out}: run the "
                                        "`annotate` stage first")
            stem = layout.shard_stem(name)
            for i, row in enumerate(storage.read_parquet(uri).to_pylist()):
                rows.append(mix_select.AnnotationRow(table, mixture.source_key(stem, i), row))
                random_init = random_init or bool(row.get("random_init"))
    plan_frames = {(v["video_id"], p["stage"]): len(p["frame_indices"]) for v in m.videos for p in v["sampling"]}
    return videos, shards, rows, plan_frames, random_init


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    videos, shards, rows, plan_frames, random_init = _inputs(ctx)
    if random_init:
        print("[mix] WARNING: the annotations come from a RANDOM-WEIGHT model (tiny_demo_model) — these mixtures are "
              "for tests and demos only", flush=True)
    for stage, st in cfg.mix.stages.items():
        if st.video_read_type == "img" and cfg.mix.timestamp_prompt == "trainer":
            print(f"[mix] note: {stage} reads frame directories, which a trainer sees as 1-fps videos: its own "
                  "timestamp prompt would give the wrong duration (set mix.timestamp_prompt: inline and train "
                  "without --time_msg)", flush=True)
    selected = mix_select.select(mix_select.candidates(rows, videos, cfg.mix.max_turns), videos, cfg.mix, cfg.sampling)
    outputs = {stage: mix_records.stage_files(stage, per_task, videos, cfg) for stage, per_task in selected.items()}

    copy_videos = set().union(*(o.videos for o in outputs.values())) if outputs else set()
    frame_dirs = [d for o in outputs.values() for d in o.frame_dirs.values()]
    storage.remove_stale_temporaries(ctx.uri(layout.MIXTURES_DIR))
    units, done = mix_payload.plan_units(ctx, videos, copy_videos, frame_dirs, shards, mix_files.listing(ctx))
    if done:
        print(f"[mix] payloads of {done} shards already committed, {len(units)} to write", flush=True)
    ray_runtime.map_units(NAME, mix_payload.write_unit, units, (ctx,), "shards")

    existing = mix_files.listing(ctx) | {f"{layout.SHARDS_DIR}/{s}" for s in shards}
    mix_validate.validate({s: o.files for s, o in outputs.items()}, cfg, videos, plan_frames, existing)

    keep = set(layout.mix_video_path(v, videos[v].extension) for v in copy_videos)
    keep |= {f for d in frame_dirs for f in d.files(cfg.mix.frame_prefix)}
    for o in outputs.values():
        data_yaml = layout.mixture_file_path(o.stage, layout.MIX_DATA_YAML)
        # data.yaml last: a trainer that finds it finds the files it lists
        for rel in sorted(o.files, key=lambda r: r == data_yaml):
            storage.write_bytes_if_changed(ctx.uri(rel), o.files[rel])
        keep |= set(o.files)
        if not o.counts:
            print(f"[mix] note: {o.stage} has no records (no annotation of its tasks has a "
                  f"{'/'.join(cfg.mix.stages[o.stage].videos)} duration)", flush=True)
    removed = mix_files.remove_stale(ctx, keep)
    if removed:
        print(f"[mix] removed {removed} files no configured stage references", flush=True)
    return {"records": {s: dict(o.counts) for s, o in outputs.items()},
            "videos": len(copy_videos), "frame_dirs": len(frame_dirs), "random_init": random_init}
