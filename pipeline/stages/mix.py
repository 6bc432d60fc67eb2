"""mix: stage-tagged curriculum mixtures — per curriculum stage, LLaVA-NeXT / VideoChat-Flash annotation files
(`<task>.jsonl`), the trainer's `data.yaml`, the WebDataset shard list and task weights for streaming trainers, and
the membership table recording which annotation went where. Media the files point at are materialised once.

Order: partitions of consecutive shards read from manifest/videos.parquet in batches → a Ray task per partition
forms, places, serialises and validates its records into sorted parts (pipeline/mix/partition.py) → when a merge
would read more than `mix.merge_fan_in` parts, Ray tasks first merge groups of them into sorted runs
(pipeline/mix/runs.py) → a Ray task per (stage, task) and one per stage's members merge them by streaming into a
spool under work/, applying the caps (pipeline/mix/final.py) → a Ray task per partition writes the payloads its
chosen records point at (skipped when committed) and lists them → commit, only when every check passed and only
changed files → a Ray task removes what is no longer referenced (pipeline/mix/files.py) → the parts and the spool
go. The driver holds a batch of the manifest and per-partition and per-task results, never a row or a path per
video; the files do not depend on the partitioning."""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from pipeline.core import tempdirs
from pipeline.core.context import StageContext
from pipeline.io import storage
from pipeline.mix import assemble as mix_assemble
from pipeline.mix import files as mix_files
from pipeline.mix import final as mix_final
from pipeline.mix import partition as mix_partition
from pipeline.mix import runs as mix_runs
from pipeline.mix import validate as mix_validate
from schemas import layout

log = logging.getLogger(__name__)

NAME = "mix"
DESCRIPTION = "curriculum mixtures (stage1..4): annotation JSONL, data.yaml, shard lists, weights, membership"


def _map_partitions(fn: Callable, partitions: Iterable, args: Callable, ctx: StageContext) -> list[dict]:
    """fn(partition, *args(partition), ctx) as Ray tasks, a bounded number in flight (the partitions are read as
    they are submitted); results in partition order."""
    import ray

    from pipeline.core import ray_runtime
    from pipeline.core.progress import Progress

    remote = ray.remote(num_cpus=1, max_retries=2)(tempdirs.released(fn))
    ctx_ref = ray.put(ctx)
    window = ray_runtime.default_in_flight()
    pending, results = [], []
    progress = Progress(NAME, 0, "partitions")
    for part in partitions:
        pending.append(remote.remote(part, *args(part), ctx_ref))
        progress.total += 1
        while len(pending) >= window:
            done, pending = ray.wait(pending, num_returns=1)
            results += ray.get(done)
            progress.advance(1)
    for ref in pending:
        results.append(ray.get(ref))
        progress.advance(1)
    progress.finish()
    return sorted(results, key=lambda r: r["partition"])


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    for stage, st in cfg.mix.stages.items():
        if st.video_read_type == "img" and cfg.mix.timestamp_prompt == "trainer":
            log.warning(f"[mix] {stage} reads frame directories, which a trainer sees as 1-fps videos: its own "
                        "timestamp prompt would give the wrong duration (set mix.timestamp_prompt: inline and train "
                        "without --time_msg)")
    storage.remove_stale_temporaries(ctx.uri(layout.MIXTURES_DIR))
    _remove_parts(ctx)
    try:
        return _build(ctx)
    finally:
        _remove_parts(ctx)


def _build(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    started = time.monotonic()
    built = _map_partitions(mix_partition.build_records, mix_assemble.iter_partitions(ctx), lambda p: (), ctx)
    log.info(f"[mix] record parts of {len(built)} partitions in {time.monotonic() - started:.1f} s")
    problems = [p for r in built for p in r["problems"]]
    mix_validate.raise_problems(problems)
    random_init = any(r["random_init"] for r in built)
    if random_init:
        log.warning("[mix] the annotations come from a RANDOM-WEIGHT model (tiny_demo_model) — these mixtures are "
                    "for tests and demos only")

    tasks_of = {r["partition"]: r["tasks"] for r in built}
    phase = time.monotonic()
    parts = mix_runs.reduce(ctx, {stage: mix_runs.stage_parts(stage, tasks_of) for stage in cfg.mix.stages})
    log.info(f"[mix] sorted runs in {time.monotonic() - phase:.1f} s")
    phase = time.monotonic()
    assembled = mix_final.assemble(ctx, parts)
    log.info(f"[mix] final merges in {time.monotonic() - phase:.1f} s")
    problems += [p for a in assembled for p in a.problems]
    mix_validate.raise_problems(problems)
    counts = {a.stage: a.counts for a in assembled}
    last_order = {(a.stage, t): o for a in assembled for t, o in a.last_order.items()}

    phase = time.monotonic()
    paid = _map_partitions(mix_partition.write_payloads, mix_assemble.iter_partitions(ctx),
                           lambda p: (tasks_of.get(p.index, {}), last_order), ctx)
    log.info(f"[mix] payloads in {time.monotonic() - phase:.1f} s")
    done = sum(r["done"] for r in paid)
    if done:
        log.info(f"[mix] payloads of {done} shards already committed, {sum(r['written'] for r in paid)} written")
    phase = time.monotonic()
    mix_final.commit(ctx, assembled)
    log.info(f"[mix] committed: {sum(len(a.spooled) for a in assembled)} changed files moved from the spool in "
             f"{time.monotonic() - phase:.1f} s")
    for a in assembled:
        if not a.counts:
            log.warning(f"[mix] {a.stage} has no records (no annotation of its tasks has a "
                        f"{'/'.join(cfg.mix.stages[a.stage].videos)} duration)")
    removed = mix_files.remove_stale_in_task(ctx, [f for a in assembled for f in a.files],
                                             [layout.mix_payloads_part_path(r["partition"]) for r in paid])
    if removed:
        log.info(f"[mix] removed {removed} files no configured stage references")
    return {"records": counts, "videos": sum(r["videos"] for r in paid),
            "frame_dirs": sum(r["frame_dirs"] for r in paid), "random_init": random_init}


def _remove_parts(ctx: StageContext) -> None:
    """The parts, runs and spooled files of this run or of a killed one."""
    for folder in (layout.MIX_PARTS_DIR, layout.MIX_SPOOL_DIR):
        # locally with the folders the spooled files were moved out of, and temporaries of killed tasks
        storage.remove_folder(ctx.uri(folder))
