"""The manifest tables and the build summary from what is committed, without writing shards: what the `probe` and
`scenes` stages write at their end, and what the runner summarises after a stage other than `shard`. The same path
as the `shard` stage (pipeline/ingest/shard_plan.py): the plan over Arrow columns, then one Ray task per group of
shards that makes the sampling plans and digests and checks the committed shard records; no Python object per
video in the driver."""

from __future__ import annotations

from pipeline.core import summary
from pipeline.core.context import StageContext
from pipeline.ingest import manifest, shard_plan

SHARDS_PER_TASK = 16  # shards a check task plans (no tar is written, so a task does little per shard)


def refresh(ctx: StageContext, stage: str, write: bool = True) -> tuple[dict, shard_plan.Plan]:
    """The build summary and the plan (its videos and rejects final); with `write`, manifest/videos.parquet and
    manifest/rejects.parquet are rewritten when they changed (every input probed, every input in one table)."""
    plan = shard_plan.build(ctx)
    if write:
        manifest.require_probed(plan)
        with shard_plan.videos_writer(ctx) as out:
            outcome = shard_plan.run_partitions(ctx, plan, stage, shard_plan.check_partition, SHARDS_PER_TASK, out)
            shard_plan.reconcile(plan, outcome)
        shard_plan.write_rejects(ctx, plan)
    else:
        outcome = shard_plan.run_partitions(ctx, plan, stage, shard_plan.check_partition, SHARDS_PER_TASK, None)
    return summary.summarize_plan(plan, outcome), plan


def scene_count(plan: shard_plan.Plan) -> int:
    """Scenes of the accepted videos (a video without scenes yet counts none), counted as the partitions came back."""
    return plan.scenes
