"""stats: the auditor tables (per video, per shard, per reject reason, per curriculum stage and task) and
stats/summary.json, written only when every count reconciles; a mismatch fails the stage naming each disagreement."""

from __future__ import annotations

from pipeline.core import summary
from pipeline.core.context import StageContext
from pipeline.ingest import manifest_refresh
from pipeline.stats import tables as stats
from pipeline.stats.sources import BuildOutput

NAME = "stats"
DESCRIPTION = "auditor tables in stats/ (videos, shards, rejects, curriculum stages) and summary.json, reconciled"


def run(ctx: StageContext) -> dict:
    out = BuildOutput(ctx.out)
    result = stats.compute(out)
    stats.check(result)
    stats.write(out, result)
    persisted = summary.summarize_persisted(ctx.out)
    if persisted is not None:
        summary.write(ctx.out, persisted)
    else:
        current, _ = manifest_refresh.refresh(ctx, NAME, write=False)
        if current["pending_probe"] == 0:
            summary.write(ctx.out, current)
    t = result.small_tables
    return {"videos": result.videos.rows, "shards": t["shards"].num_rows, "reject_reasons": t["rejects"].num_rows,
            "stage_tasks": t["stages"].num_rows, "mixtures": "built" if result.mixtures_built else "not built",
            "reconciled": True}
