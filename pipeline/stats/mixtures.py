"""Per curriculum stage and task: samples, hours, visual and text tokens of the mixtures, reconciled against the
membership tables (every JSONL line is one record_id of members.parquet, and back) and against the annotation tables
the members point at. Counting rules: schemas/stats.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.stats.sources import BuildOutput
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


def _per_record(members: pa.Table) -> pa.Table:
    """One row per (task, record_id): a sample's duration and visual tokens count once, however many turns it has."""
    return members.group_by(["task", "record_id"]).aggregate([
        ("duration_s", "max"), ("visual_tokens", "max"), ("text_chars", "sum"), ("video_id", "count"),
    ])


def _sorted_examples(values) -> list:
    return sorted(values)[:stats_schema.EXAMPLES]


def collect(out: BuildOutput, annotation_videos: dict[tuple[str, str], pa.Array],
            random_rows: dict[tuple[str, str], pa.Array], accepted: pa.Array) -> MixtureStats:
    """annotation_videos: (table, shard stem) -> video_id of each row; random_rows: the same -> whether a
    random-weight model made each row; accepted: video_ids of manifest/videos. Members are handled as Arrow
    tables, per stage."""
    stages = out.mixture_stages()
    result = MixtureStats(built=bool(stages))
    for stage in stages:
        members_path = layout.mixture_members_path(stage)
        members = out.read_table(members_path)
        missing_cols = set(MIX_MEMBERS.names) - set(members.column_names)
        if missing_cols:
            result.mismatches.append(f"{members_path} lacks columns {sorted(missing_cols)} (rerun the `mix` stage)")
            continue
        members = members.combine_chunks()
        other_stage = set(pc.unique(members["stage"]).to_pylist()) - {stage}
        if other_stage:
            result.mismatches.append(f"{members_path} has rows of stage {sorted(other_stage)}, not {stage}")
        files = out.mixture_task_files(stage)
        per_record = _per_record(members)
        tasks = sorted(set(pc.unique(members["task"]).to_pylist()) | set(files))
        random = _check_members(result, stage, members, annotation_videos, random_rows, accepted)
        members = members.select(["task", "video_id", "source_table"]).append_column("random", random)
        for task in tasks:
            mine = members.filter(pc.equal(members["task"], task))
            result.rows.append(_task_row(out, result, stage, task, files.get(task), per_record, mine))
        vids = pc.unique(members["video_id"])
        result.stage_tags.append(pa.table({"video_id": vids, "stage": pa.array([stage] * len(vids), pa.string())}))
    return result


def _check_members(result: MixtureStats, stage: str, members: pa.Table,
                   annotation_videos: dict[tuple[str, str], pa.Array], random_rows: dict[tuple[str, str], pa.Array],
                   accepted: pa.Array) -> pa.Array:
    """Mismatches of the members' videos and source keys; returns, per member row, whether the annotation row it
    points at came from a random-weight model. Vectorised per (table, shard) group of members."""
    path = layout.mixture_members_path(stage)
    videos = members["video_id"]
    unknown = pc.unique(pc.filter(videos, pc.invert(pc.is_in(videos, value_set=accepted)))).to_pylist()
    if unknown:
        result.mismatches.append(f"{path}: {len(unknown)} videos are not in manifest/videos.parquet "
                                 f"(e.g. {_sorted_examples(unknown)}; rerun the `mix` stage)")
    n = members.num_rows
    random = np.zeros(n, dtype=bool)
    dangling = []
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
        bad_keys = pc.filter(pc.take(keys, idx), pc.invert(ok)).to_pylist()
        dangling += [f"{table}/{key}" for key in bad_keys]
    if dangling:
        result.mismatches.append(f"{path}: {len(dangling)} rows point at annotation rows that do not exist or belong "
                                 f"to another video (e.g. {_sorted_examples(dangling)}; the annotations changed "
                                 "after mixing: rerun the `mix` stage)")
    return pa.array(random)


def _task_row(out: BuildOutput, result: MixtureStats, stage: str, task: str, jsonl: str | None,
              per_record: pa.Table, task_members: pa.Table) -> dict:
    mine = per_record.filter(pc.equal(per_record["task"], task))
    record_ids = mine["record_id"]
    n_records = len(record_ids)
    expected = layout.mixture_task_path(stage, task)
    counts = scan_jsonl(out, jsonl) if jsonl else JsonlCounts()
    members_path = layout.mixture_members_path(stage)
    if jsonl is None:
        result.mismatches.append(f"{expected} is missing but {members_path} lists {n_records} records of task "
                                 f"{task} (rerun the `mix` stage)")
    elif counts.lines != n_records:
        result.mismatches.append(f"{expected} has {counts.lines} lines but {members_path} lists {n_records} "
                                 f"records of task {task} (rerun the `mix` stage)")
    if counts.bad_lines:
        result.mismatches.append(f"{expected}: lines {counts.bad_lines[:stats_schema.EXAMPLES]} are not JSON records with an id")
    if counts.duplicate_ids:
        result.mismatches.append(f"{expected}: ids repeated on several lines: {_sorted_examples(counts.duplicate_ids)}")
    if jsonl is not None:
        file_ids = counts.id_array()
        only_file = pc.filter(file_ids, pc.invert(pc.is_in(file_ids, value_set=record_ids))).to_pylist()
        only_members = pc.filter(record_ids, pc.invert(pc.is_in(record_ids, value_set=file_ids))).to_pylist()
        if only_file or only_members:
            result.mismatches.append(f"{expected} and {members_path} disagree on record ids: {len(only_file)} only in "
                                     f"the file (e.g. {_sorted_examples(only_file)}), {len(only_members)} only in "
                                     f"the members (e.g. {_sorted_examples(only_members)})")
    return {
        "stage": stage,
        "task": task,
        "samples": counts.lines,
        "annotations": task_members.num_rows,
        "videos": pc.count_distinct(task_members["video_id"]).as_py() if task_members.num_rows else 0,
        "hours": round((pc.sum(mine["duration_s_max"]).as_py() or 0.0) / 3600, 6),
        "visual_tokens": pc.sum(mine["visual_tokens_max"]).as_py() or 0,
        "text_tokens": counts.text_tokens,
        "text_chars": pc.sum(mine["text_chars_sum"]).as_py() or 0,
        "random_init": bool(pc.any(task_members["random"]).as_py()) if task_members.num_rows else False,
    }
