"""Per curriculum stage and task: samples, hours, visual and text tokens of the mixtures, reconciled against the
membership tables (every JSONL line is one record_id of members.parquet, and back) and against the annotation tables
the members point at. Each (stage, task) is checked by Ray tasks of its own (pipeline/stats/mixture_parts.py): one
when it is small, bounded parts exchanging record ids by hash bucket when it is large; the driver gets back rows,
messages and counts only. Counting rules: schemas/stats.py."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pipeline.core import ray_runtime
from pipeline.core.columns import runs
from pipeline.io import storage
from pipeline.stats import remote
from pipeline.stats.inputs import sorted_examples
from pipeline.stats.mixture_parts import (
    TaskPlan,
    bucket_check,
    check_task,
    combine,
    distinct_videos,
    jsonl_part,
    member_part,
)
from pipeline.stats.sources import BuildOutput, arrow_s3_operation
from schemas import layout
from schemas import stats as stats_schema
from schemas.mixture import MIX_MEMBERS


@dataclass
class MixtureStats:
    built: bool
    rows: list[dict] = field(default_factory=list)  # schemas.stats.STAGES rows
    # (stage, the distinct video_ids of each of its tasks): ObjectRefs under Ray the driver never fetches
    stage_tags: list = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


MEMBER_BATCH_ROWS = 65536  # rows of members.parquet read at a time (its row group size)


@dataclass
class _StagePlan:
    stage: str
    tasks: list[TaskPlan] = field(default_factory=list)
    unsorted: bool = False
    problem: str | None = None  # a members.parquet that cannot be checked at all


def collect(out: BuildOutput, lookup: list, keys, tasks_in_flight: int | None = None,
            member_rows: int | None = None, jsonl_bytes: int | None = None) -> MixtureStats:
    """lookup: the annotation groups' pieces of the row lookup (pipeline/stats/annotations.py ROW_LOOKUP;
    ObjectRefs under Ray); keys: manifest/videos' video_id and duration_s (an ObjectRef under Ray). Each (stage, task) is checked by Ray tasks (at most `tasks_in_flight`
    Ray tasks submitted at a time; in this process when Ray is not running), in parts of about `member_rows` rows of
    members.parquet and `jsonl_bytes` bytes of JSONL (schemas.stats defaults). The driver reads no more than the
    `task` column of each members.parquet, a row group at a time, to know which row groups hold a task."""
    stages = out.mixture_stages()
    result = MixtureStats(built=bool(stages))
    sizes = (member_rows or stats_schema.MIXTURE_CHECK_MEMBER_ROWS,
             jsonl_bytes or stats_schema.MIXTURE_CHECK_JSONL_BYTES)
    plans = [_plan_stage(out, stage, *sizes) for stage in stages]
    tasks = [t for plan in plans for t in plan.tasks]
    by_stage: dict[str, list[tuple]] = {}
    for task, found in zip(tasks, _run_tasks(tasks, out.root, keys, lookup, tasks_in_flight)):
        by_stage.setdefault(task.stage, []).append(found)
    for plan in plans:
        _add_stage(result, plan, by_stage.get(plan.stage, []))
    return result


def _run_tasks(tasks: list[TaskPlan], root: str, keys, lookup: list, in_flight: int | None):
    """(the `combine` result, its distinct video_ids) of each task, in order; under Ray the video_ids are an
    ObjectRef the driver never fetches. Under Ray a task of one part is one Ray task (`check_task`); a larger one is
    its member and JSONL parts, then one `bucket_check` per bucket fed their bucket objects and one
    `distinct_videos` fed their video_ids (which never pass through the driver). At most `in_flight` Ray tasks are submitted at a time, counting every part and
    bucket check of a split task (one larger than that runs alone): a split task's bucket objects, which stay in
    the object store until its bucket checks have read them, are those of one large task at a time, not of
    `in_flight` of them."""
    from pipeline.core.progress import Progress

    settings = storage.settings()
    if not ray_runtime.ray_running():
        yield from (check_task(t, root, settings, keys, *lookup) for t in tasks)
        return
    import ray

    whole, distinct = remote.remote(check_task, 2), remote.remote(distinct_videos, 2)
    member, jsonl, check = (remote.remote(fn) for fn in (member_part, jsonl_part, bucket_check))
    progress = Progress("stats", len(tasks), "mixture tasks")
    pending: deque = deque()  # (task, its refs, Ray tasks submitted for it)
    submitted = 0

    def oldest() -> tuple:
        nonlocal submitted
        task, refs, ray_tasks = pending.popleft()
        if len(refs) == 2:
            found = ray.get(refs[0]), refs[1]
        else:
            members, jsonls, buckets, (n_videos, videos) = refs
            found = combine(task, ray.get(members), ray.get(jsonls), ray.get(buckets), ray.get(n_videos)), videos
        submitted -= ray_tasks
        progress.advance(1)
        return found

    limit = ray_runtime.default_in_flight(in_flight)
    for task in tasks:
        if task.buckets == 1:
            pending.append((task, tuple(whole.remote(task, root, settings, keys, *lookup)), 1))
            submitted += 1
        else:
            members = [member.options(num_returns=task.buckets + 2).remote(task, i, root, settings, keys, *lookup)
                       for i in range(len(task.member_parts))]
            jsonls = [jsonl.options(num_returns=task.buckets + 1).remote(task, i, root, settings)
                      for i in range(len(task.jsonl_parts))]
            buckets = [check.remote(len(members), *[m[2 + b] for m in members], *[j[1 + b] for j in jsonls])
                       for b in range(task.buckets)]
            videos = tuple(distinct.remote(*[m[1] for m in members]))
            ray_tasks = len(members) + len(jsonls) + len(buckets) + 1
            pending.append((task, ([m[0] for m in members], [j[0] for j in jsonls], buckets, videos), ray_tasks))
            submitted += ray_tasks
            del members, jsonls  # the bucket objects are held by the bucket checks only, freed once they ran
        while pending and submitted >= limit:
            yield oldest()
    while pending:
        yield oldest()
    progress.finish()


def _plan_stage(out: BuildOutput, stage: str, member_rows: int, jsonl_bytes: int) -> _StagePlan:
    """The (stage, task) plans: every task of members.parquet or with a JSONL file, with the row groups holding its
    rows (from the `task` column, read a row group at a time) cut into parts of about `member_rows` rows, its JSONL
    cut into byte ranges of `jsonl_bytes`, and whether the file is out of task order (a task whose rows come in more
    than one run)."""
    members_path = layout.mixture_members_path(stage)
    plan = _StagePlan(stage)
    with arrow_s3_operation("GetObject", out.uri(members_path)):
        missing_cols = set(MIX_MEMBERS.names) - set(out.open_parquet(members_path).schema_arrow.names)
    if missing_cols:
        plan.problem = f"{members_path} lacks columns {sorted(missing_cols)} (rerun the `mix` stage)"
        return plan
    groups: dict[str, list[list[int]]] = {}  # task -> [row group, rows of the task in it]
    last = None
    for i, rows in out.row_groups(members_path, ["task"]):
        for task, start, stop in runs(rows["task"]):
            if task != last:
                plan.unsorted = plan.unsorted or task in groups
                last = task
            in_groups = groups.setdefault(task, [])
            if not in_groups or in_groups[-1][0] != i:
                in_groups.append([i, 0])
            in_groups[-1][1] += stop - start
    files = out.mixture_task_files(stage)
    for task in sorted(set(groups) | set(files)):
        jsonl = files.get(task)
        size = storage.size(out.uri(jsonl)) if jsonl else 0
        jsonl_parts = tuple((a, min(a + jsonl_bytes, size)) for a in range(0, size, jsonl_bytes)) or \
            (((0, 0),) if jsonl else ())
        plan.tasks.append(TaskPlan(stage, task, jsonl, _member_parts(groups.get(task, []), member_rows),
                                   jsonl_parts, MEMBER_BATCH_ROWS))
    return plan


def _member_parts(groups: list[list[int]], member_rows: int) -> tuple[tuple[int, ...], ...]:
    """Consecutive row groups taken together until they hold `member_rows` rows of the task."""
    parts, current, rows = [], [], 0
    for group, n in groups:
        current.append(group)
        rows += n
        if rows >= member_rows:
            parts.append(tuple(current))
            current, rows = [], 0
    if current:
        parts.append(tuple(current))
    return tuple(parts)


def _add_stage(result: MixtureStats, plan: _StagePlan, results: list[tuple]) -> None:
    """The stage's messages (in the order they always came: stage-wide first, then per task in task order), rows
    and video tags, from its tasks' (result, distinct video_ids)."""
    members_path = layout.mixture_members_path(plan.stage)
    if plan.problem:
        result.mismatches.append(plan.problem)
        return
    found = [f for f, _ in results]
    other_stage = {s for f in found for s in f["other_stages"]}
    unknown = {v for f in found for v in f["unknown"]}
    dangling = sum(f["dangling"] for f in found)
    if other_stage:
        result.mismatches.append(f"{members_path} has rows of stage {sorted(other_stage)}, not {plan.stage}")
    if plan.unsorted:
        result.mismatches.append(f"{members_path} is not in (task, record_id, turn) order (rerun the `mix` stage)")
    if unknown:
        result.mismatches.append(f"{members_path}: {len(unknown)} videos are not in manifest/videos.parquet "
                                 f"(e.g. {sorted_examples(unknown)}; rerun the `mix` stage)")
    if dangling:
        examples = sorted_examples(e for f in found for e in f["dangling_examples"])
        result.mismatches.append(f"{members_path}: {dangling} rows point at annotation rows that do not "
                                 f"exist or belong to another video (e.g. {examples}; the "
                                 "annotations changed after mixing: rerun the `mix` stage)")
    for f in sorted(found, key=lambda f: f["row"]["task"]):
        result.rows.append(f["row"])
        result.mismatches += f["messages"]
    result.stage_tags.append((plan.stage, [videos for _, videos in results]))
