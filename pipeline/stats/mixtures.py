"""Per curriculum stage and task: samples, hours, visual and text tokens of the mixtures, reconciled against the
membership tables (every JSONL line is one record_id of members.parquet, and back) and against the annotation tables
the members point at. Each (stage, task) is checked in a Ray task of its own, which reads its rows of members.parquet
and its JSONL; the driver gets back its row and messages only. Counting rules: schemas/stats.py."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.columns import runs
from pipeline.io import storage
from pipeline.stats.sources import BuildOutput, arrow_s3_operation
from schemas import layout
from schemas import stats as stats_schema
from schemas.mixture import MIX_MEMBERS



@dataclass
class MixtureStats:
    built: bool
    rows: list[dict] = field(default_factory=list)  # schemas.stats.STAGES rows
    stage_tags: list = field(default_factory=list)  # per stage, an Arrow table (video_id, stage) of its videos
    mismatches: list[str] = field(default_factory=list)


@dataclass
class JsonlCounts:
    lines: int = 0
    ids: list = field(default_factory=list)  # Arrow chunks of the record ids, in file order
    duplicate_ids: list = field(default_factory=list)
    bad_lines: list = field(default_factory=list)  # 1-based line numbers that are not a JSON record with an id
    text_tokens: int = 0

    def id_array(self) -> pa.Array:
        return pa.concat_arrays(self.ids) if self.ids else pa.array([], pa.string())


ID_CHUNK = 65536


def scan_jsonl(out: BuildOutput, relative: str) -> JsonlCounts:
    """Lines, ids (as Arrow, not a Python set), repeated ids, bad lines and text tokens of a JSONL file, streamed."""
    counts = JsonlCounts()
    pending: list[str] = []
    for number, line in enumerate(out.iter_lines(relative), start=1):
        counts.lines += 1
        try:
            record = json.loads(line)
            record_id = str(record["id"])
            turns = record.get("conversations") or []
        except (ValueError, KeyError, TypeError):
            counts.bad_lines.append(number)
            continue
        pending.append(record_id)
        if len(pending) >= ID_CHUNK:
            counts.ids.append(pa.array(pending, pa.string()))
            pending = []
        counts.text_tokens += sum(stats_schema.count_text_tokens(str(t.get("value", ""))) for t in turns
                                  if isinstance(t, dict))
    if pending:
        counts.ids.append(pa.array(pending, pa.string()))
    ids = counts.id_array()
    if len(ids):
        repeated = pc.value_counts(ids)
        counts.duplicate_ids = pc.filter(repeated.field("values"), pc.greater(repeated.field("counts"), 1)).to_pylist()
    return counts


MEMBER_BATCH_ROWS = 65536  # rows of members.parquet read at a time (its row group size)
PER_RECORD = [("duration_s", "max"), ("visual_tokens", "max"), ("text_chars", "sum")]


def _sorted_examples(values) -> list:
    return sorted(values)[:stats_schema.EXAMPLES]


@dataclass
class _Task:
    """One task's members, aggregated as its rows stream past: per record (a sample's duration and visual tokens
    count once, however many turns it has), rows, videos and whether any row is random-weight."""
    partials: list = field(default_factory=list)  # per-record aggregates of each slice (a record may span two)
    rows: int = 0
    videos: list = field(default_factory=list)
    random: bool = False

    def add(self, members: pa.Table) -> None:
        self.partials.append(members.group_by("record_id", use_threads=False).aggregate(PER_RECORD))
        self.rows += members.num_rows
        self.videos.append(pc.unique(members["video_id"]))
        self.random = self.random or bool(pc.any(members["random"]).as_py())

    def per_record(self) -> pa.Table:
        """record_id, duration_s_max, visual_tokens_max, text_chars_sum: one row per record, in first-seen order."""
        if not self.partials:
            return pa.table({"record_id": pa.array([], pa.string()), "duration_s_max": pa.array([], pa.float64()),
                             "visual_tokens_max": pa.array([], pa.int64()), "text_chars_sum": pa.array([], pa.int64())})
        merged = pa.concat_tables(self.partials).group_by("record_id", use_threads=False).aggregate(
            [("duration_s_max", "max"), ("visual_tokens_max", "max"), ("text_chars_sum", "sum")])
        return merged.rename_columns(["record_id", "duration_s_max", "visual_tokens_max", "text_chars_sum"])

    def distinct_video_ids(self) -> pa.Array:
        return pc.unique(pa.chunked_array(self.videos, pa.string())) if self.videos else pa.array([], pa.string())

    def distinct_videos(self) -> int:
        return len(self.distinct_video_ids())


@dataclass
class _MemberProblems:
    unknown: set = field(default_factory=set)  # video_ids not in the manifest
    dangling: int = 0  # rows pointing at no annotation row of their video
    dangling_examples: list = field(default_factory=list)  # the first EXAMPLES of their table/source_key, sorted


@dataclass(frozen=True)
class TaskUnit:
    """The work of one (curriculum stage, task): its rows of members.parquet (in `row_groups`) and its JSONL."""
    stage: str
    task: str
    jsonl: str | None  # relative path of mixtures/<stage>/<task>.jsonl, None when missing
    row_groups: tuple[int, ...]  # row groups of members.parquet holding rows of the task
    batch_rows: int


@dataclass
class _StagePlan:
    stage: str
    units: list[TaskUnit] = field(default_factory=list)
    unsorted: bool = False
    problem: str | None = None  # a members.parquet that cannot be checked at all


def collect(out: BuildOutput, annotation_videos: dict[tuple[str, str], pa.Array],
            random_rows: dict[tuple[str, str], pa.Array], accepted: pa.Array,
            tasks_in_flight: int | None = None) -> MixtureStats:
    """annotation_videos: (table, shard stem) -> video_id of each row; random_rows: the same -> whether a
    random-weight model made each row; accepted: video_ids of manifest/videos. Each (stage, task) is checked by a
    Ray task (`task_stats`, at most `tasks_in_flight` at a time; in this process when Ray is not running) that reads
    its own rows of members.parquet and its JSONL and returns only its row and messages: the driver reads no more
    than the `task` column of each members.parquet, a row group at a time, to know which row groups hold a task."""
    stages = out.mixture_stages()
    result = MixtureStats(built=bool(stages))
    plans = [_plan_stage(out, stage) for stage in stages]
    units = [u for plan in plans for u in plan.units]
    shared = (out.root, storage.settings(), annotation_videos, random_rows, accepted)
    by_stage: dict[str, list[dict]] = {}
    for unit, found in zip(units, _run_units(units, shared, tasks_in_flight)):
        by_stage.setdefault(unit.stage, []).append(found)
    for plan in plans:
        _add_stage(result, plan, by_stage.get(plan.stage, []))
    return result


def _run_units(units: list[TaskUnit], shared: tuple, in_flight: int | None):
    import ray

    if not ray.is_initialized():
        return (task_stats(u, *shared) for u in units)
    from pipeline.core import ray_runtime

    return ray_runtime.imap_units("stats", task_stats, units, shared, "mixture tasks", total_items=len(units),
                                  in_flight=in_flight)


def _plan_stage(out: BuildOutput, stage: str) -> _StagePlan:
    """The (stage, task) units: every task of members.parquet or with a JSONL file, with the row groups holding its
    rows (from the `task` column, read a row group at a time), and whether the file is out of task order (a task
    whose rows come in more than one run)."""
    members_path = layout.mixture_members_path(stage)
    plan = _StagePlan(stage)
    with arrow_s3_operation("GetObject", out.uri(members_path)):
        parquet = out.open_parquet(members_path)
        missing_cols = set(MIX_MEMBERS.names) - set(parquet.schema_arrow.names)
        if missing_cols:
            plan.problem = f"{members_path} lacks columns {sorted(missing_cols)} (rerun the `mix` stage)"
            return plan
        groups: dict[str, list[int]] = {}
        last = None
        for i in range(parquet.num_row_groups):
            for task, _, _ in runs(parquet.read_row_group(i, columns=["task"])["task"]):
                if task != last:
                    plan.unsorted = plan.unsorted or task in groups
                    last = task
                in_groups = groups.setdefault(task, [])
                if not in_groups or in_groups[-1] != i:
                    in_groups.append(i)
    files = out.mixture_task_files(stage)
    plan.units = [TaskUnit(stage, task, files.get(task), tuple(groups.get(task, ())), MEMBER_BATCH_ROWS)
                  for task in sorted(set(groups) | set(files))]
    return plan


def task_stats(unit: TaskUnit, root: str, settings, annotation_videos: dict, random_rows: dict,
               accepted: pa.Array) -> dict:
    """One (stage, task): its stats/stages row, its own mismatch messages, and what the stage-wide messages and
    stage tags need (other stages named in its rows, unknown videos, dangling rows, its distinct videos)."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    members_path = layout.mixture_members_path(unit.stage)
    problems = _MemberProblems()
    members = _Task()
    other_stages: set = set()
    if unit.row_groups:
        with arrow_s3_operation("GetObject", out.uri(members_path)):
            parquet = out.open_parquet(members_path)
            for batch in parquet.iter_batches(unit.batch_rows, row_groups=list(unit.row_groups),
                                              columns=MIX_MEMBERS.names):
                rows = pa.Table.from_batches([batch])
                rows = rows.filter(pc.equal(rows["task"], unit.task)).combine_chunks()
                if not rows.num_rows:
                    continue
                other_stages |= set(pc.unique(rows["stage"]).to_pylist()) - {unit.stage}
                random = _check_members(problems, rows, annotation_videos, random_rows, accepted)
                rows = rows.select(["task", "record_id", "video_id", "duration_s", "visual_tokens", "text_chars"])
                members.add(rows.append_column("random", random))
    messages: list[str] = []
    row = _task_row(out, messages, unit.stage, unit.task, unit.jsonl, members)
    return {"row": row, "messages": messages, "other_stages": sorted(other_stages),
            "unknown": sorted(problems.unknown), "dangling": problems.dangling,
            "dangling_examples": problems.dangling_examples, "videos": members.distinct_video_ids()}


def _add_stage(result: MixtureStats, plan: _StagePlan, found: list[dict]) -> None:
    """The stage's messages (in the order they always came: stage-wide first, then per task in task order), rows
    and video tags, from its tasks' results."""
    members_path = layout.mixture_members_path(plan.stage)
    if plan.problem:
        result.mismatches.append(plan.problem)
        return
    other_stage = {s for f in found for s in f["other_stages"]}
    unknown = {v for f in found for v in f["unknown"]}
    dangling = sum(f["dangling"] for f in found)
    if other_stage:
        result.mismatches.append(f"{members_path} has rows of stage {sorted(other_stage)}, not {plan.stage}")
    if plan.unsorted:
        result.mismatches.append(f"{members_path} is not in (task, record_id, turn) order (rerun the `mix` stage)")
    if unknown:
        result.mismatches.append(f"{members_path}: {len(unknown)} videos are not in manifest/videos.parquet "
                                 f"(e.g. {_sorted_examples(unknown)}; rerun the `mix` stage)")
    if dangling:
        examples = _sorted_examples(e for f in found for e in f["dangling_examples"])
        result.mismatches.append(f"{members_path}: {dangling} rows point at annotation rows that do not "
                                 f"exist or belong to another video (e.g. {examples}; the "
                                 "annotations changed after mixing: rerun the `mix` stage)")
    for f in sorted(found, key=lambda f: f["row"]["task"]):
        result.rows.append(f["row"])
        result.mismatches += f["messages"]
    vids = pc.unique(pa.chunked_array([f["videos"] for f in found], pa.string())) if found else \
        pa.array([], pa.string())
    result.stage_tags.append(pa.table({"video_id": vids, "stage": pa.array([plan.stage] * len(vids), pa.string())}))


def _check_members(problems: _MemberProblems, members: pa.Table,
                   annotation_videos: dict[tuple[str, str], pa.Array], random_rows: dict[tuple[str, str], pa.Array],
                   accepted: pa.Array) -> pa.Array:
    """Collects the members' unknown videos and dangling source keys; returns, per member row, whether the
    annotation row it points at came from a random-weight model. Vectorised per (table, shard) group of members."""
    videos = members["video_id"]
    problems.unknown.update(pc.unique(pc.filter(videos, pc.invert(pc.is_in(videos, value_set=accepted)))).to_pylist())
    n = members.num_rows
    random = np.zeros(n, dtype=bool)
    keys = pc.fill_null(members["source_key"], "")
    tables_ = pc.fill_null(members["source_table"], "")
    stems = pc.replace_substring_regex(keys, ":[^:]*$", "")
    row_text = pc.replace_substring_regex(keys, "^.*:", "")
    groups = pa.table({"t": tables_, "s": stems, "i": pa.array(np.arange(n))}).group_by(["t", "s"]).aggregate(
        [("i", "list")])
    is_number = pc.match_substring_regex(row_text, "^[0-9]{1,18}$")  # an int64 row number
    for k in range(groups.num_rows):
        table, stem = groups["t"][k].as_py(), groups["s"][k].as_py()
        if not table or not stem:
            continue
        idx = groups["i_list"][k].values
        rows = annotation_videos.get((table, stem))
        n_rows = len(rows) if rows is not None else 0
        number = pc.take(is_number, idx)
        position = pc.if_else(number, pc.cast(pc.if_else(number, pc.take(row_text, idx), "0"), pa.int64()), -1)
        valid = pc.and_(pc.greater_equal(position, 0), pc.less(position, n_rows))
        if n_rows:
            safe = pc.if_else(valid, position, 0)
            same = pc.equal(pc.take(rows, safe).cast(pa.string()), pc.take(videos, idx))
            ok = pc.and_(valid, pc.fill_null(same, False))
            random[pc.filter(idx, pc.and_(ok, pc.take(random_rows[(table, stem)], safe))).to_numpy()] = True
        else:
            ok = pa.array(np.zeros(len(idx), dtype=bool))
        bad_keys = pc.filter(pc.take(keys, idx), pc.invert(ok))
        problems.dangling += len(bad_keys)
        if len(bad_keys):
            first = pc.take(bad_keys, pc.sort_indices(bad_keys)[:stats_schema.EXAMPLES]).to_pylist()
            problems.dangling_examples = _sorted_examples(problems.dangling_examples +
                                                          [f"{table}/{key}" for key in first])
    return pa.array(random)


def _task_row(out: BuildOutput, mismatches: list[str], stage: str, task: str, jsonl: str | None,
              members: _Task) -> dict:
    mine = members.per_record()
    record_ids = mine["record_id"]
    n_records = len(record_ids)
    expected = layout.mixture_task_path(stage, task)
    counts = scan_jsonl(out, jsonl) if jsonl else JsonlCounts()
    members_path = layout.mixture_members_path(stage)
    if jsonl is None:
        mismatches.append(f"{expected} is missing but {members_path} lists {n_records} records of task "
                          f"{task} (rerun the `mix` stage)")
    elif counts.lines != n_records:
        mismatches.append(f"{expected} has {counts.lines} lines but {members_path} lists {n_records} "
                          f"records of task {task} (rerun the `mix` stage)")
    if counts.bad_lines:
        mismatches.append(f"{expected}: lines {counts.bad_lines[:stats_schema.EXAMPLES]} are not JSON records "
                          "with an id")
    if counts.duplicate_ids:
        mismatches.append(f"{expected}: ids repeated on several lines: {_sorted_examples(counts.duplicate_ids)}")
    if jsonl is not None:
        file_ids = counts.id_array()
        only_file = pc.filter(file_ids, pc.invert(pc.is_in(file_ids, value_set=record_ids))).to_pylist()
        only_members = pc.filter(record_ids, pc.invert(pc.is_in(record_ids, value_set=file_ids))).to_pylist()
        if only_file or only_members:
            mismatches.append(f"{expected} and {members_path} disagree on record ids: {len(only_file)} only in "
                              f"the file (e.g. {_sorted_examples(only_file)}), {len(only_members)} only in "
                              f"the members (e.g. {_sorted_examples(only_members)})")
    return {
        "stage": stage,
        "task": task,
        "samples": counts.lines,
        "annotations": members.rows,
        "videos": members.distinct_videos(),
        "hours": round((pc.sum(mine["duration_s_max"]).as_py() or 0.0) / 3600, 6),
        "visual_tokens": pc.sum(mine["visual_tokens_max"]).as_py() or 0,
        "text_tokens": counts.text_tokens,
        "text_chars": pc.sum(mine["text_chars_sum"]).as_py() or 0,
        "random_init": members.random,
    }
