"""First-level merges of the `mix` stage: when a (curriculum stage, task) has more record parts than
`mix.merge_fan_in` (or a stage more members parts), Ray tasks merge groups of that many consecutive parts into sorted
runs, level by level, until the driver's final merge (pipeline/mix/assemble.py) reads at most `merge_fan_in` files at
once. The driver's memory then stays bounded however many partitions there are, and the first levels run in
parallel. A run is the exact merge of its group, and groups keep partition order, so the files are the same bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.context import StageContext, configure_worker
from pipeline.io import storage
from pipeline.mix import assemble as mix_assemble
from pipeline.mix import merge as mix_merge
from schemas import layout, mixture

RECORDS, MEMBERS = "records", "members"


@dataclass
class StageParts:
    """A stage's sorted inputs of the final merge, relative paths in partition order."""
    records: dict[str, list[str]] = field(default_factory=dict)  # task -> record parts or runs
    members: list[str] = field(default_factory=list)  # members parts or runs


@dataclass(frozen=True)
class RunUnit:
    kind: str  # RECORDS or MEMBERS
    parts: tuple[str, ...]  # the group merged, in partition order
    run: str  # where the run is written


def stage_parts(stage: str, tasks_of: dict[int, dict[str, list[str]]]) -> StageParts:
    """The stage's parts as the partitions wrote them (tasks_of: partition -> stage -> its tasks)."""
    out = StageParts()
    for p in sorted(tasks_of):
        tasks = tasks_of[p].get(stage)
        if tasks is None:
            continue
        out.members.append(layout.mix_members_part_path(stage, p))
        for task in tasks:
            out.records.setdefault(task, []).append(layout.mix_records_part_path(stage, task, p))
    return out


def _plan(paths: list[str], kind: str, level: int, fan_in: int) -> tuple[list[RunUnit], list[str]]:
    if len(paths) <= fan_in:
        return [], paths
    units = [RunUnit(kind, tuple(paths[i:i + fan_in]), layout.mix_run_path(paths[i], level, i // fan_in))
             for i in range(0, len(paths), fan_in)]
    return units, [u.run for u in units]


def reduce(ctx: StageContext, parts: dict[str, StageParts]) -> dict[str, StageParts]:
    """Every stage's parts merged into runs until none of its merges reads more than `mix.merge_fan_in` files."""
    from pipeline.core import ray_runtime

    fan_in = ctx.cfg.mix.merge_fan_in
    level = 0
    while True:
        units: list[RunUnit] = []
        reduced: dict[str, StageParts] = {}
        for stage, sp in parts.items():
            new = reduced[stage] = StageParts()
            for task, paths in sp.records.items():
                planned, new.records[task] = _plan(paths, RECORDS, level, fan_in)
                units += planned
            planned, new.members = _plan(sp.members, MEMBERS, level, fan_in)
            units += planned
        if not units:
            return parts
        for _ in ray_runtime.imap_units("mix", merge_run, units, (ctx,), "sorted runs", total_items=len(units)):
            pass
        parts, level = reduced, level + 1


def merge_run(unit: RunUnit, ctx: StageContext) -> dict:
    """Ray task: the exact merge of a group of sorted parts, written as one sorted run (the columns the next merge
    reads, in row groups of `mixture.RUN_ROWS_PER_GROUP` rows)."""
    configure_worker(ctx.cfg)
    columns, key_of = ((mix_merge.RECORD_COLUMNS, mix_merge.order_key) if unit.kind == RECORDS
                       else (mix_merge.MEMBER_COLUMNS, mix_merge.members_key))
    schema = (mixture.MIX_RECORDS_PART if unit.kind == RECORDS else mixture.MIX_MEMBERS_PART)
    schema = pa.schema([schema.field(c) for c in columns])
    streams = [mix_assemble.part_batches(ctx, rel, columns) for rel in unit.parts]
    rows = 0
    with storage.staged_output(ctx.uri(unit.run)) as local:
        with pq.ParquetWriter(local, schema, compression="zstd") as writer:
            for group in mix_merge.regroup(mix_merge.merge_sorted(streams, key_of), mixture.RUN_ROWS_PER_GROUP):
                writer.write_table(group.select(columns).cast(schema), row_group_size=mixture.RUN_ROWS_PER_GROUP)
                rows += group.num_rows
    return {"run": unit.run, "rows": rows}
