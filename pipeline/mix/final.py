"""The final merges of the `mix` stage, in parallel Ray tasks: one per (curriculum stage, task) writes its JSONL (and
the optional `.json` list and InternVideo2.5 variant) with the task's cap applied, and one per stage writes
`members.parquet` once the tasks it needs are done (a capped task's last kept order key decides which of its members
rows stay). A task writes its files to a local folder, then moves each into the spool (`work/mix-spool/<path>`, on
the output's storage, local or S3) only when it differs from the committed file. The driver receives counts, order
keys, shard names and the names of the spooled files; it checks every stage and only then moves the spooled files
into place, each stage's data.yaml last (`commit`)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field

from pipeline.core import tempdirs
from pipeline.core.context import StageContext, configure_worker
from pipeline.core.progress import Progress
from pipeline.io import storage
from pipeline.mix import assemble as mix_assemble
from pipeline.mix.runs import StageParts
from schemas import layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskMerge:
    stage: str
    task: str
    parts: tuple[str, ...]  # sorted record parts or runs, in partition order


@dataclass(frozen=True)
class MembersMerge:
    stage: str
    parts: tuple[str, ...]  # sorted members parts or runs, in partition order


@dataclass
class StageAssembly:
    stage: str
    counts: dict[str, int] = field(default_factory=dict)  # task -> records, in the config's task order
    last_order: dict[str, str | None] = field(default_factory=dict)  # task -> order key of its last record if capped
    shards: set[str] = field(default_factory=set)  # shards the stage's records point at
    spooled: list[str] = field(default_factory=list)  # files in the spool: they differ from the committed ones
    files: list[str] = field(default_factory=list)  # every file of the stage, relative to the output root
    small: dict[str, bytes] = field(default_factory=dict)  # the small files (data.yaml among them), written last
    problems: list[str] = field(default_factory=list)


def merge_task(unit: TaskMerge, ctx: StageContext) -> dict:
    """Ray task: a (stage, task)'s files, spooled when changed."""
    configure_worker(ctx.cfg)
    started, cpu = time.monotonic(), time.process_time()
    folder = tempdirs.mkdtemp(prefix="longvid-mix-final-")
    try:
        a = mix_assemble.write_task(ctx, unit.stage, unit.task, list(unit.parts), folder)
        spooled = _spool(ctx, folder, mix_assemble.task_files(ctx.cfg, unit.stage, unit.task))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"stage": unit.stage, "task": unit.task, "count": a.count, "last_order": a.last_order,
            "shards": sorted(a.shards), "spooled": spooled, "seconds": time.monotonic() - started,
            "cpu_s": time.process_time() - cpu}


def merge_members(unit: MembersMerge, ctx: StageContext, *capped_tasks: dict) -> dict:
    """Ray task: a stage's members.parquet, spooled when changed. `capped_tasks`: merge_task's results of the
    stage's capped tasks."""
    configure_worker(ctx.cfg)
    started, cpu = time.monotonic(), time.process_time()
    capped = {r["task"]: r["last_order"] for r in capped_tasks if r["last_order"] is not None}
    rel = layout.mixture_members_path(unit.stage)
    folder = tempdirs.mkdtemp(prefix="longvid-mix-final-")
    try:
        records = mix_assemble.write_members(ctx, list(unit.parts), capped, os.path.join(folder, rel))
        spooled = _spool(ctx, folder, [rel])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"stage": unit.stage, "records": records, "spooled": spooled, "seconds": time.monotonic() - started,
            "cpu_s": time.process_time() - cpu}


def _spool(ctx: StageContext, folder: str, files: list[str]) -> list[str]:
    """Move the files written under `folder` into the spool, those that differ from the committed ones; returns
    those."""
    return [rel for rel in files if storage.stage_file_if_changed(os.path.join(folder, rel), ctx.uri(rel),
                                                                  ctx.uri(layout.mix_spool_path(rel)))]


def assemble(ctx: StageContext, parts: dict[str, StageParts]) -> list[StageAssembly]:
    """Every stage's files merged into the spool by Ray tasks, checked; one StageAssembly per stage, config order."""
    import ray

    cfg = ctx.cfg
    remote_task = ray.remote(num_cpus=1, max_retries=2)(tempdirs.released(merge_task))
    remote_members = ray.remote(num_cpus=1, max_retries=2)(tempdirs.released(merge_members))
    ctx_ref = ray.put(ctx)
    refs, units = [], {}
    capped_refs: dict[str, list] = {}
    for stage, sp in parts.items():
        for task, paths in sp.records.items():
            ref = remote_task.remote(TaskMerge(stage, task, tuple(paths)), ctx_ref)
            refs.append(ref)
            units[ref] = len(paths)
            if cfg.mix.stages[stage].tasks[task].max_records is not None:
                capped_refs.setdefault(stage, []).append(ref)
    for stage, sp in parts.items():
        ref = remote_members.remote(MembersMerge(stage, tuple(sp.members)), ctx_ref, *capped_refs.get(stage, []))
        refs.append(ref)
        units[ref] = len(sp.members)

    results: dict = {}
    progress = Progress("mix", len(refs), "final merges")
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=5.0)
        for ref in done:
            r = results[ref] = ray.get(ref)
            what = f"{r['stage']}/{r['task']}: {r['count']}" if "task" in r else \
                f"{r['stage']}: members.parquet of {sum(r['records'].values())}"
            log.info(f"[mix] {what} records from {units[ref]} parts or runs merged in {r['seconds']:.1f} s "
                     f"({r['cpu_s']:.1f} CPU s)")
            progress.advance(1)
    progress.finish()

    by_stage = {stage: StageAssembly(stage) for stage in parts}
    member_records: dict[str, dict[str, int]] = {}
    for ref in refs:
        r = results[ref]
        a = by_stage[r["stage"]]
        a.spooled += r["spooled"]
        if "task" in r:
            a.counts[r["task"]] = r["count"]
            a.last_order[r["task"]] = r["last_order"]
            a.shards.update(r["shards"])
            a.files += mix_assemble.task_files(cfg, r["stage"], r["task"])
        else:
            member_records[r["stage"]] = r["records"]
            a.files.append(layout.mixture_members_path(r["stage"]))
    for stage, a in by_stage.items():
        a.counts = {t: a.counts[t] for t in cfg.mix.stages[stage].tasks if t in a.counts}
        a.small = mix_assemble.small_files(cfg, stage, a.counts, a.shards)
        a.files += list(a.small)
        a.problems = mix_assemble.check_stage(cfg, stage, a.counts, member_records[stage], a.small, a.shards)
    return list(by_stage.values())


def commit(ctx: StageContext, assembled: list[StageAssembly]) -> None:
    """Move the spooled files into place and write the changed small files, each stage's data.yaml last (a trainer
    that finds it finds the files it lists)."""
    for a in assembled:
        for rel in a.spooled:
            storage.move(ctx.uri(layout.mix_spool_path(rel)), ctx.uri(rel))
        data_yaml = layout.mixture_file_path(a.stage, layout.MIX_DATA_YAML)
        for rel in sorted(a.small, key=lambda r: r == data_yaml):
            storage.write_bytes_if_changed(ctx.uri(rel), a.small[rel])
