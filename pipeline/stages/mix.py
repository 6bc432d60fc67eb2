"""mix: stage-tagged curriculum mixtures — per curriculum stage, LLaVA-NeXT / VideoChat-Flash annotation files
(`<task>.jsonl`), the trainer's `data.yaml`, the WebDataset shard list and task weights for streaming trainers, and
the membership table recording which annotation went where. Media the files point at are materialised once.

Order: select (pure, seeded; annotation rows read shard by shard) → payloads (Ray task per shard, skipped when
committed) → per curriculum stage: serialise its files, validate them, spool them to local disk → commit only when
every stage passed (only changed files are written) → remove what is no longer referenced."""

from __future__ import annotations

import os
import tempfile

from pipeline import manifest, mix_files, mix_payload, mix_records, mix_select, mix_validate, ray_runtime, storage
from pipeline.context import StageContext, StageInputMissing
from schemas import layout, mixture

NAME = "mix"
DESCRIPTION = "curriculum mixtures (stage1..4): annotation JSONL, data.yaml, shard lists, weights, membership"

ANNOTATION_SOURCES = ("captions", "qa", "grounding")
# What the mixtures read of each annotation table (mix_text and mix_select): never the provenance columns.
ANNOTATION_COLUMNS = {"captions": ["video_id", "level", "start_s", "end_s", "text", "random_init"],
                      "qa": ["video_id", "family", "form", "question", "options", "answer", "random_init"],
                      "grounding": ["video_id", "query", "start_s", "end_s", "random_init"]}


class _Annotations:
    """Every annotation row with its source key, read shard by shard as it is consumed (never all held at once)."""

    def __init__(self, ctx: StageContext, shard_names: list[str]):
        self.ctx, self.shard_names = ctx, shard_names
        self.random_init = False

    def __iter__(self):
        for name in self.shard_names:
            stem = layout.shard_stem(name)
            for table in ANNOTATION_SOURCES:
                uri = self.ctx.uri(layout.annotation_path(table, name))
                rows = storage.read_parquet(uri, columns=ANNOTATION_COLUMNS[table]).to_pylist()
                for i, row in enumerate(rows):
                    self.random_init = self.random_init or bool(row.get("random_init"))
                    yield mix_select.AnnotationRow(table, mixture.source_key(stem, i), row)


def _inputs(ctx: StageContext):
    """The manifest's videos with their committed shards, and the annotation rows (read lazily) with source keys."""
    m = manifest.assemble(ctx)
    manifest.require_probed(m)
    videos: dict[str, mix_select.VideoInfo] = {}
    shards: dict[str, tuple[str, str]] = {}
    for planned in m.shards:
        if planned.record is None:
            raise StageInputMissing(f"shard {planned.plan.name} is not committed: run the `shard` stage first")
        name = planned.plan.name
        shards[name] = (ctx.uri(layout.shard_path(planned.plan.index)), planned.record["sha256"])
        for v in planned.plan.videos:
            videos[v["video_id"]] = mix_select.VideoInfo(v["video_id"], v["extension"], name, v["reader_num_frames"],
                                                         v["reader_fps"])
        for table in ANNOTATION_SOURCES:
            if not storage.exists(ctx.uri(layout.annotation_path(table, name))):
                raise StageInputMissing(f"{layout.annotation_path(table, name)} is missing under {ctx.out}: run the "
                                        "`annotate` stage first")
    plan_frames = {(v["video_id"], p["stage"]): len(p["frame_indices"]) for v in m.videos for p in v["sampling"]}
    return videos, shards, _Annotations(ctx, list(shards)), plan_frames


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    videos, shards, rows, plan_frames = _inputs(ctx)
    cands = mix_select.candidates(rows, videos, cfg.mix.max_turns)
    random_init = rows.random_init
    if random_init:
        print("[mix] WARNING: the annotations come from a RANDOM-WEIGHT model (tiny_demo_model) — these mixtures are "
              "for tests and demos only", flush=True)
    for stage, st in cfg.mix.stages.items():
        if st.video_read_type == "img" and cfg.mix.timestamp_prompt == "trainer":
            print(f"[mix] note: {stage} reads frame directories, which a trainer sees as 1-fps videos: its own "
                  "timestamp prompt would give the wrong duration (set mix.timestamp_prompt: inline and train "
                  "without --time_msg)", flush=True)
    selected = mix_select.select(cands, videos, cfg.mix, cfg.sampling)
    del cands
    payloads = {stage: mix_records.stage_payloads(stage, per_task, cfg) for stage, per_task in selected.items()}
    copy_videos = set().union(*(v for v, _ in payloads.values())) if payloads else set()
    frame_dirs = [d for _, dirs in payloads.values() for d in dirs]
    del payloads
    storage.remove_stale_temporaries(ctx.uri(layout.MIXTURES_DIR))
    units, done = mix_payload.plan_units(ctx, videos, copy_videos, frame_dirs, shards, mix_files.listing(ctx))
    if done:
        print(f"[mix] payloads of {done} shards already committed, {len(units)} to write", flush=True)
    ray_runtime.map_units(NAME, mix_payload.write_unit, units, (ctx,), "shards")
    del units

    existing = mix_files.listing(ctx) | {f"{layout.SHARDS_DIR}/{s}" for s in shards}
    keep = set(layout.mix_video_path(v, videos[v].extension) for v in copy_videos)
    keep |= {f for d in frame_dirs for f in d.files(cfg.mix.frame_prefix)}
    counts: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="longvid-mix-") as spool:
        # One curriculum stage at a time is serialised and checked, then spooled to local disk: only one stage's
        # files are ever in memory, and nothing is committed until every stage passed.
        problems: list[str] = []
        written: dict[str, list[str]] = {}
        for stage in list(selected):
            o = mix_records.stage_files(stage, selected.pop(stage), videos, cfg)
            problems += mix_validate.stage_problems(stage, o.files, cfg, videos, plan_frames, existing)
            for rel, data in o.files.items():
                path = os.path.join(spool, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
            written[stage], counts[stage] = list(o.files), dict(o.counts)
            del o
        mix_validate.raise_problems(problems)
        for stage, files in written.items():
            data_yaml = layout.mixture_file_path(stage, layout.MIX_DATA_YAML)
            # data.yaml last: a trainer that finds it finds the files it lists
            for rel in sorted(files, key=lambda r: r == data_yaml):
                storage.commit_file_if_changed(os.path.join(spool, rel), ctx.uri(rel))
            keep |= set(files)
            if not counts[stage]:
                print(f"[mix] note: {stage} has no records (no annotation of its tasks has a "
                      f"{'/'.join(cfg.mix.stages[stage].videos)} duration)", flush=True)
    removed = mix_files.remove_stale(ctx, keep)
    if removed:
        print(f"[mix] removed {removed} files no configured stage references", flush=True)
    return {"records": counts, "videos": len(copy_videos), "frame_dirs": len(frame_dirs), "random_init": random_init}
