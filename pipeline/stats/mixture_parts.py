"""The worker side of the mixture checks of one (curriculum stage, task), cut into bounded parts (TaskPlan): member
parts (runs of row groups of members.parquet) and JSONL parts (line-aligned byte ranges) each return a small summary
plus their record ids cut into hash buckets; one bucket check per bucket compares the ids of both sides and sums the
per-record counts; `combine` turns the summaries into the task's stats/stages row and messages. A task that fits one
part runs all of it in one Ray task (`check_task`), the same functions in the same order, so no split changes a byte.
Durations are summed as integer microseconds (the mixtures round them to 6 places), which no order can change."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io import storage
from pipeline.stats import buckets as hash_buckets
from pipeline.stats import text_tokens as text_tokens_of
from pipeline.stats.inputs import first_sorted, sorted_examples
from pipeline.stats.sources import BuildOutput, arrow_s3_operation
from schemas import layout
from schemas import stats as stats_schema
from schemas.mixture import MIX_MEMBERS

ID_CHUNK = 65536
TEXT_CHUNK = 8192  # conversation turns whose text tokens are counted at once
PER_RECORD = pa.schema([("record_id", pa.string()), ("duration_us", pa.int64()), ("visual_tokens", pa.int64()),
                        ("text_chars", pa.int64())])
RECORD_AGGREGATES = [("duration_us", "max"), ("visual_tokens", "max"), ("text_chars", "sum")]


@dataclass(frozen=True)
class TaskPlan:
    """The work of one (curriculum stage, task): its rows of members.parquet (`member_parts`: runs of row groups)
    and its JSONL (`jsonl_parts`: byte ranges), with their record ids exchanged through `buckets` hash buckets."""
    stage: str
    task: str
    jsonl: str | None  # relative path of mixtures/<stage>/<task>.jsonl, None when missing
    member_parts: tuple[tuple[int, ...], ...]
    jsonl_parts: tuple[tuple[int, int], ...]
    batch_rows: int

    @property
    def buckets(self) -> int:
        return max(len(self.member_parts), len(self.jsonl_parts), 1)


@dataclass
class _MemberProblems:
    unknown: set = field(default_factory=set)  # video_ids not in the manifest
    dangling: int = 0  # rows pointing at no annotation row of their video
    dangling_examples: list = field(default_factory=list)  # the first EXAMPLES of their table/source_key, sorted


def member_part(plan: TaskPlan, index: int, root: str, settings, keys: pa.Table, *lookup: dict) -> list:
    """Member part `index`: [summary, its distinct video_ids, per-record partial aggregates of bucket 0, 1, ...]
    (PER_RECORD tables). `keys`: the manifest's video_id (and duration_s) table; `lookup`: the annotation groups'
    pieces of the row lookup (pipeline/stats/annotations.py ROW_LOOKUP)."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    accepted = keys["video_id"]
    rows_lookup = _FlatLookup.of({key: value for piece in lookup for key, value in piece.items()})
    members_path = layout.mixture_members_path(plan.stage)
    problems = _MemberProblems()
    partials, videos = [], []
    n_rows, random_any, other_stages = 0, False, set()
    with arrow_s3_operation("GetObject", out.uri(members_path)):
        parquet = out.open_parquet(members_path)
        for batch in parquet.iter_batches(plan.batch_rows, row_groups=list(plan.member_parts[index]),
                                          columns=MIX_MEMBERS.names):
            rows = pa.Table.from_batches([batch])
            rows = rows.filter(pc.equal(rows["task"], plan.task)).combine_chunks()
            if not rows.num_rows:
                continue
            other_stages |= set(pc.unique(rows["stage"]).to_pylist()) - {plan.stage}
            random = _check_members(problems, rows, rows_lookup, accepted)
            n_rows += rows.num_rows
            videos.append(pc.unique(rows["video_id"]))
            random_any = random_any or bool(pc.any(random).as_py())
            duration_us = pc.cast(pc.round(pc.multiply(pc.cast(rows["duration_s"], pa.float64()), 1e6)), pa.int64())
            per_row = pa.table({"record_id": rows["record_id"], "duration_us": duration_us,
                                "visual_tokens": pc.cast(rows["visual_tokens"], pa.int64()),
                                "text_chars": pc.cast(rows["text_chars"], pa.int64())})
            partials.append(_per_record(per_row))
    per_record = (partials[0] if len(partials) == 1 else _per_record(pa.concat_tables(partials))) if partials else \
        PER_RECORD.empty_table()
    summary = {"rows": n_rows, "random": random_any, "other_stages": sorted(other_stages),
               "unknown": sorted(problems.unknown), "dangling": problems.dangling,
               "dangling_examples": problems.dangling_examples}
    distinct = pc.unique(pa.chunked_array(videos, pa.string())) if videos else pa.array([], pa.string())
    return [summary, distinct, *hash_buckets.split(per_record, per_record["record_id"], plan.buckets)]


def distinct_videos(*videos: pa.Array) -> tuple[int, pa.Array]:
    """The distinct video_ids of a task's member parts: (how many, them sorted)."""
    distinct = pc.unique(pa.chunked_array(videos, pa.string())) if videos else pa.array([], pa.string())
    distinct = distinct.combine_chunks() if isinstance(distinct, pa.ChunkedArray) else distinct
    return len(distinct), pc.take(distinct, pc.sort_indices(distinct))


def _per_record(rows: pa.Table) -> pa.Table:
    """One row per record_id: the largest duration and visual tokens (a sample counts once, however many turns it
    has) and the summed text characters."""
    merged = rows.group_by("record_id", use_threads=False).aggregate(RECORD_AGGREGATES)
    return merged.rename_columns(PER_RECORD.names).cast(PER_RECORD)


def jsonl_part(plan: TaskPlan, index: int, root: str, settings) -> list:
    """JSONL part `index`: [summary (lines, first bad line numbers counted from the part's start, text tokens),
    the record ids of bucket 0, 1, ...]."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    start, end = plan.jsonl_parts[index]
    lines, text_tokens, bad_lines, bad_count = 0, 0, [], 0
    ids, pending, texts = [], [], []
    for raw in out.iter_line_range(plan.jsonl, start, end):
        lines += 1
        try:
            record_id, turns, plain_texts = _read_line(raw)
        except (ValueError, KeyError, TypeError):
            bad_count += 1
            if len(bad_lines) < stats_schema.EXAMPLES:
                bad_lines.append(lines)
            continue
        pending.append(record_id)
        texts += plain_texts if plain_texts is not None else \
            [str(t.get("value", "")) for t in turns if isinstance(t, dict)]
        if len(texts) >= TEXT_CHUNK:
            text_tokens += text_tokens_of.count(texts)
            texts = []
        if len(pending) >= ID_CHUNK:
            ids.append(pa.array(pending, pa.string()))
            pending = []
    text_tokens += text_tokens_of.count(texts)
    if pending:
        ids.append(pa.array(pending, pa.string()))
    all_ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
    summary = {"lines": lines, "bad_lines": bad_lines, "bad_count": bad_count, "text_tokens": text_tokens}
    return [summary, *hash_buckets.split(all_ids, all_ids, plan.buckets)]


def _read_line(raw: bytes) -> tuple[str, list | None, list[str] | None]:
    """(str of the record's id, its conversation turns, the text of its dict turns) of one JSONL line as
    `json.loads` reads it; raises ValueError, KeyError or TypeError for a line that is not a JSON record with an id.
    orjson parses the usual line, whose id and turn values are strings (the texts then come with it, the turns not);
    json.loads the rest: lines orjson refuses (NaN, lone surrogates, integers beyond 64 bits, which json.loads
    accepts) and records with a non-string id or turn value (orjson reads integers beyond 64 bits as floats, whose
    str would differ), whose texts the caller takes from the turns."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        record = None
    if type(record) is dict:
        record_id, turns = record.get("id"), record.get("conversations")
        if type(record_id) is str and (not turns or type(turns) is list):
            texts = [t.get("value", "") for t in turns if type(t) is dict] if turns else []
            if all(type(text) is str for text in texts):
                return record_id, None, texts
    record = json.loads(raw.decode("utf-8"))
    return str(record["id"]), record.get("conversations") or [], None


def bucket_check(member_tables: int, *pieces) -> dict:
    """One hash bucket of a task: `member_tables` PER_RECORD tables (one per member part), then the record ids of
    each JSONL part. Per-record counts summed, and which ids are repeated in the file or on one side only."""
    tables = [t for t in pieces[:member_tables] if t.num_rows]
    if len(tables) > 1:  # a record cut between member parts: its partial aggregates merged
        per_record = _per_record(pa.concat_tables(tables))
    else:  # one part's table holds each of its records once already
        per_record = tables[0] if tables else PER_RECORD.empty_table()
    record_ids = per_record["record_id"]
    file_ids = pa.chunked_array(pieces[member_tables:], pa.string())
    repeated = pc.value_counts(file_ids) if len(file_ids) else None
    duplicates = pc.filter(repeated.field("values"), pc.greater(repeated.field("counts"), 1)) if repeated else \
        pa.array([], pa.string())
    only_file = pc.filter(file_ids, pc.invert(pc.is_in(file_ids, value_set=record_ids)))
    only_members = pc.filter(record_ids, pc.invert(pc.is_in(record_ids, value_set=file_ids.combine_chunks())))
    return {"records": len(record_ids), "duration_us": pc.sum(per_record["duration_us"]).as_py() or 0,
            "visual_tokens": pc.sum(per_record["visual_tokens"]).as_py() or 0,
            "text_chars": pc.sum(per_record["text_chars"]).as_py() or 0,
            "duplicates": len(duplicates), "duplicate_examples": first_sorted(duplicates),
            "only_file": len(only_file), "only_file_examples": first_sorted(only_file),
            "only_members": len(only_members), "only_members_examples": first_sorted(only_members)}


def check_task(plan: TaskPlan, root: str, settings, keys: pa.Table, *lookup: dict) -> tuple[dict, pa.Array]:
    """The whole check of a task in this process: every part and bucket in turn, then `combine`; (its result,
    its distinct video_ids)."""
    members = [member_part(plan, i, root, settings, keys, *lookup) for i in range(len(plan.member_parts))]
    jsonls = [jsonl_part(plan, i, root, settings) for i in range(len(plan.jsonl_parts))]
    found = [bucket_check(len(members), *[m[2 + b] for m in members], *[j[1 + b] for j in jsonls])
             for b in range(plan.buckets)]
    n_videos, videos = distinct_videos(*[m[1] for m in members])
    return combine(plan, [m[0] for m in members], [j[0] for j in jsonls], found, n_videos), videos


def combine(plan: TaskPlan, members: list[dict], jsonls: list[dict], found: list[dict], n_videos: int) -> dict:
    """The task's stats/stages row (`n_videos` distinct videos), its own mismatch messages, and what the
    stage-wide messages need (other stages named in its rows, unknown videos, dangling rows)."""
    stage, task, jsonl = plan.stage, plan.task, plan.jsonl
    n_records = sum(f["records"] for f in found)
    lines = sum(j["lines"] for j in jsonls)
    expected = layout.mixture_task_path(stage, task)
    members_path = layout.mixture_members_path(stage)
    messages = []
    if jsonl is None:
        messages.append(f"{expected} is missing but {members_path} lists {n_records} records of task "
                        f"{task} (rerun the `mix` stage)")
    elif lines != n_records:
        messages.append(f"{expected} has {lines} lines but {members_path} lists {n_records} "
                        f"records of task {task} (rerun the `mix` stage)")
    bad_lines, before = [], 0
    for j in jsonls:
        bad_lines += [before + n for n in j["bad_lines"]]
        before += j["lines"]
    if bad_lines:
        messages.append(f"{expected}: lines {bad_lines[:stats_schema.EXAMPLES]} are not JSON records with an id")
    if any(f["duplicates"] for f in found):
        messages.append(f"{expected}: ids repeated on several lines: "
                        f"{sorted_examples(e for f in found for e in f['duplicate_examples'])}")
    if jsonl is not None:
        only_file = sum(f["only_file"] for f in found)
        only_members = sum(f["only_members"] for f in found)
        if only_file or only_members:
            messages.append(f"{expected} and {members_path} disagree on record ids: {only_file} only in the file "
                            f"(e.g. {sorted_examples(e for f in found for e in f['only_file_examples'])}), "
                            f"{only_members} only in the members "
                            f"(e.g. {sorted_examples(e for f in found for e in f['only_members_examples'])})")
    row = {
        "stage": stage,
        "task": task,
        "samples": lines,
        "annotations": sum(m["rows"] for m in members),
        "videos": n_videos,
        "hours": round(sum(f["duration_us"] for f in found) / 3_600_000_000, 6),
        "visual_tokens": sum(f["visual_tokens"] for f in found),
        "text_tokens": sum(j["text_tokens"] for j in jsonls),
        "text_chars": sum(f["text_chars"] for f in found),
        "random_init": any(m["random"] for m in members),
    }
    return {"row": row, "messages": messages,
            "other_stages": sorted({s for m in members for s in m["other_stages"]}),
            "unknown": sorted({v for m in members for v in m["unknown"]}),
            "dangling": sum(m["dangling"] for m in members),
            "dangling_examples": sorted_examples(e for m in members for e in m["dangling_examples"])}


@dataclass(frozen=True)
class _FlatLookup:
    """The annotation row lookup as flat arrays, so that member rows are checked in whole batches: the rows of
    lookup group g (`keys[g]` = table NUL shard stem) are `offsets[g]` to `offsets[g] + lengths[g]` of `codes`
    (indices into `names`, the video_id of each annotation row; -1 for none) and `random`."""
    keys: pa.Array
    offsets: np.ndarray
    lengths: np.ndarray
    codes: np.ndarray
    names: pa.Array
    random: np.ndarray

    @classmethod
    def of(cls, lookup: dict) -> _FlatLookup:
        """From {(table, shard stem): (video_id of each row, dictionary-encoded, random_init of each row)}."""
        keys, lengths, codes, names, random = [], [], [], [], []
        named = 0
        for (table, stem), (rows, random_rows) in lookup.items():
            keys.append(f"{table}\x00{stem}")
            lengths.append(len(rows))
            if not isinstance(rows, pa.DictionaryArray):
                rows = pc.dictionary_encode(rows)
            indices = pc.fill_null(rows.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            codes.append(np.where(indices >= 0, indices + named, -1).astype(np.int32))
            names.append(rows.dictionary.cast(pa.string()))
            named += len(rows.dictionary)
            random.append(np.asarray(pc.fill_null(random_rows, False).to_numpy(zero_copy_only=False), dtype=bool))
        lengths_ = np.array(lengths, dtype=np.int64)
        return cls(pa.array(keys, pa.string()), np.concatenate([[0], np.cumsum(lengths_)[:-1]]).astype(np.int64)
                   if keys else np.zeros(0, np.int64), lengths_,
                   np.concatenate(codes) if codes else np.zeros(0, np.int32),
                   pa.concat_arrays(names) if names else pa.array([], pa.string()),
                   np.concatenate(random) if random else np.zeros(0, bool))


def _check_members(problems: _MemberProblems, members: pa.Table, lookup: _FlatLookup, accepted: pa.Array) -> pa.Array:
    """Collects the members' unknown videos and dangling source keys; returns, per member row, whether the
    annotation row it points at came from a random-weight model. A row whose source table or shard stem is empty
    is not checked; `lookup` gives (video_id, random_init) of each annotation row by (table, shard stem, row)."""
    videos = members["video_id"]
    problems.unknown.update(pc.unique(pc.filter(videos, pc.invert(pc.is_in(videos, value_set=accepted)))).to_pylist())
    keys = pc.fill_null(members["source_key"], "")
    tables_ = pc.fill_null(members["source_table"], "")
    stems = pc.replace_substring_regex(keys, ":[^:]*$", "")
    row_text = pc.replace_substring_regex(keys, "^.*:", "")
    checked = pc.and_(pc.not_equal(tables_, ""), pc.not_equal(stems, "")).to_numpy(zero_copy_only=False)
    group = pc.index_in(pc.binary_join_element_wise(tables_, stems, "\x00"), value_set=lookup.keys)
    found = pc.is_valid(group).to_numpy(zero_copy_only=False)
    group = pc.fill_null(group, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    is_number = pc.match_substring_regex(row_text, "^[0-9]{1,18}$")  # an int64 row number
    position = pc.if_else(is_number, pc.cast(pc.if_else(is_number, row_text, "0"), pa.int64()), -1)
    position = position.to_numpy(zero_copy_only=False)
    n_rows = np.where(found, lookup.lengths[group] if len(lookup.lengths) else 0, 0)
    valid = checked & (position >= 0) & (position < n_rows)
    at = np.where(valid, (lookup.offsets[group] if len(lookup.offsets) else 0) + position, 0)
    code = np.where(valid, lookup.codes[at] if len(lookup.codes) else -1, -1)
    named = pc.take(lookup.names, pa.array(np.maximum(code, 0))) if len(lookup.names) else \
        pa.nulls(len(code), pa.string())
    same = pc.fill_null(pc.equal(named, videos), False).to_numpy(zero_copy_only=False)
    ok = valid & (code >= 0) & same
    random = ok & (lookup.random[at] if len(lookup.random) else False)
    bad = checked & ~ok
    problems.dangling += int(np.count_nonzero(bad))
    if bad.any():
        bad_keys = pc.filter(pc.binary_join_element_wise(tables_, keys, "/"), pa.array(bad))
        problems.dangling_examples = sorted_examples(problems.dangling_examples + first_sorted(bad_keys))
    return pa.array(random)
