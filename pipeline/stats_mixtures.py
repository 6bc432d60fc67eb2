"""Per curriculum stage and task: samples, hours, visual and text tokens of the mixtures, reconciled against the
membership tables (every JSONL line is one record_id of members.parquet, and back) and against the annotation tables
the members point at. Counting rules: schemas/stats.py."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.stats_sources import BuildOutput
from schemas import layout
from schemas import stats as stats_schema
from schemas.mixture import MIX_MEMBERS

EXAMPLES = 3  # mismatching ids quoted per message


@dataclass
class MixtureStats:
    built: bool
    rows: list[dict] = field(default_factory=list)  # schemas.stats.STAGES rows
    stage_tags: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # video_id -> stages
    mismatches: list[str] = field(default_factory=list)


@dataclass
class JsonlCounts:
    lines: int = 0
    ids: set = field(default_factory=set)
    duplicate_ids: list = field(default_factory=list)
    bad_lines: list = field(default_factory=list)  # 1-based line numbers that are not a JSON record with an id
    text_tokens: int = 0


def scan_jsonl(out: BuildOutput, relative: str) -> JsonlCounts:
    counts = JsonlCounts()
    for number, line in enumerate(out.iter_lines(relative), start=1):
        counts.lines += 1
        try:
            record = json.loads(line)
            record_id = str(record["id"])
            turns = record.get("conversations") or []
        except (ValueError, KeyError, TypeError):
            counts.bad_lines.append(number)
            continue
        if record_id in counts.ids:
            counts.duplicate_ids.append(record_id)
        counts.ids.add(record_id)
        counts.text_tokens += sum(stats_schema.count_text_tokens(str(t.get("value", ""))) for t in turns
                                  if isinstance(t, dict))
    return counts


def _per_record(members: pa.Table) -> pa.Table:
    """One row per (task, record_id): a sample's duration and visual tokens count once, however many turns it has."""
    return members.group_by(["task", "record_id"]).aggregate([
        ("duration_s", "max"), ("visual_tokens", "max"), ("text_chars", "sum"), ("video_id", "count"),
    ])


def _sorted_examples(values) -> list:
    return sorted(values)[:EXAMPLES]


def collect(out: BuildOutput, annotation_videos: dict[tuple[str, str], list[str]], random_keys: set[str],
            accepted: set[str]) -> MixtureStats:
    """annotation_videos: (table, shard stem) -> video_id of each row; random_keys: `<table>/<source_key>` of the
    annotation rows made by random-weight models; accepted: video_ids of manifest/videos."""
    stages = out.mixture_stages()
    result = MixtureStats(built=bool(stages))
    for stage in stages:
        members_path = layout.mixture_members_path(stage)
        members = out.read_table(members_path)
        missing_cols = set(MIX_MEMBERS.names) - set(members.column_names)
        if missing_cols:
            result.mismatches.append(f"{members_path} lacks columns {sorted(missing_cols)} (rerun the `mix` stage)")
            continue
        other_stage = set(pc.unique(members["stage"]).to_pylist()) - {stage}
        if other_stage:
            result.mismatches.append(f"{members_path} has rows of stage {sorted(other_stage)}, not {stage}")
        files = out.mixture_task_files(stage)
        per_record = _per_record(members)
        tasks = sorted(set(pc.unique(members["task"]).to_pylist()) | set(files))
        member_rows = members.select(["task", "record_id", "video_id", "source_table", "source_key"]).to_pylist()
        _check_members(result, stage, member_rows, annotation_videos, accepted)
        by_task: dict[str, list[dict]] = defaultdict(list)
        for r in member_rows:
            by_task[r["task"]].append(r)
        for task in tasks:
            result.rows.append(_task_row(out, result, stage, task, files.get(task), per_record, by_task[task],
                                         random_keys))
        for r in member_rows:
            result.stage_tags[r["video_id"]].add(stage)
    return result


def _check_members(result: MixtureStats, stage: str, member_rows: list[dict],
                   annotation_videos: dict[tuple[str, str], list[str]], accepted: set[str]) -> None:
    path = layout.mixture_members_path(stage)
    unknown = {r["video_id"] for r in member_rows} - accepted
    if unknown:
        result.mismatches.append(f"{path}: {len(unknown)} videos are not in manifest/videos.parquet "
                                 f"(e.g. {_sorted_examples(unknown)}; rerun the `mix` stage)")
    dangling = []
    for r in member_rows:
        if not r["source_table"] or not r["source_key"]:
            continue
        stem, _, row = r["source_key"].rpartition(":")
        rows = annotation_videos.get((r["source_table"], stem))
        if rows is None or not row.isdigit() or int(row) >= len(rows) or rows[int(row)] != r["video_id"]:
            dangling.append(f"{r['source_table']}/{r['source_key']}")
    if dangling:
        result.mismatches.append(f"{path}: {len(dangling)} rows point at annotation rows that do not exist or belong "
                                 f"to another video (e.g. {_sorted_examples(dangling)}; the annotations changed "
                                 "after mixing: rerun the `mix` stage)")


def _task_row(out: BuildOutput, result: MixtureStats, stage: str, task: str, jsonl: str | None,
              per_record: pa.Table, task_members: list[dict], random_keys: set[str]) -> dict:
    mine = per_record.filter(pc.equal(per_record["task"], task))
    record_ids = set(mine["record_id"].to_pylist())
    expected = layout.mixture_task_path(stage, task)
    counts = scan_jsonl(out, jsonl) if jsonl else JsonlCounts()
    members_path = layout.mixture_members_path(stage)
    if jsonl is None:
        result.mismatches.append(f"{expected} is missing but {members_path} lists {len(record_ids)} records of task "
                                 f"{task} (rerun the `mix` stage)")
    elif counts.lines != len(record_ids):
        result.mismatches.append(f"{expected} has {counts.lines} lines but {members_path} lists {len(record_ids)} "
                                 f"records of task {task} (rerun the `mix` stage)")
    if counts.bad_lines:
        result.mismatches.append(f"{expected}: lines {counts.bad_lines[:EXAMPLES]} are not JSON records with an id")
    if counts.duplicate_ids:
        result.mismatches.append(f"{expected}: ids repeated on several lines: {_sorted_examples(counts.duplicate_ids)}")
    if jsonl is not None and counts.ids != record_ids:
        only_file, only_members = counts.ids - record_ids, record_ids - counts.ids
        if only_file or only_members:
            result.mismatches.append(f"{expected} and {members_path} disagree on record ids: {len(only_file)} only in "
                                     f"the file (e.g. {_sorted_examples(only_file)}), {len(only_members)} only in "
                                     f"the members (e.g. {_sorted_examples(only_members)})")
    random_init = any(f"{r['source_table']}/{r['source_key']}" in random_keys for r in task_members
                      if r["source_table"])
    videos = {r["video_id"] for r in task_members}
    return {
        "stage": stage,
        "task": task,
        "samples": counts.lines,
        "annotations": len(task_members),
        "videos": len(videos),
        "hours": round((pc.sum(mine["duration_s_max"]).as_py() or 0.0) / 3600, 6),
        "visual_tokens": pc.sum(mine["visual_tokens_max"]).as_py() or 0,
        "text_tokens": counts.text_tokens,
        "text_chars": pc.sum(mine["text_chars_sum"]).as_py() or 0,
        "random_init": random_init,
    }
