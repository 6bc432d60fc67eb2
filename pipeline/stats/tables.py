"""The auditor tables of `stats/` (schemas/stats.py), computed from a build's output folder, and the reconciliation
that must hold before they are written: every input accepted or rejected exactly once, shard records agreeing with
the shard index and the tars, annotation counts agreeing with their shard records, HiCo clips with their records,
and every mixture file line with its membership table (pipeline/stats/mixtures.py)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.context import StageInputMissing
from pipeline.io import storage
from pipeline.stats import inputs, remote
from pipeline.stats import videos as stats_videos
from pipeline.stats.annotations import read_annotations, read_hico
from pipeline.stats.inputs import first_sorted
from pipeline.stats.mixtures import collect as collect_mixtures
from pipeline.stats.sources import BuildOutput
from schemas import layout, tables
from schemas import stats as stats_schema
from schemas.errors import LongVidError


class StatsMismatch(LongVidError, RuntimeError):
    """The build's counts do not reconcile; the message lists every disagreement and how to fix it."""


@dataclass
class BuildStats:
    small_tables: dict[str, pa.Table]  # shards, rejects, stages: a row per shard, reason or (stage, task)
    videos: stats_videos.VideosFile  # stats/videos.parquet, spooled to a local file (a row per video)
    mismatches: list[str]
    mixtures_built: bool

    @property
    def tables(self) -> dict[str, pa.Table]:
        """The four tables, stats/videos.parquet read back from its spool (for small builds: the report of a build
        the stats stage has not run on, tests)."""
        return {"videos": self.videos.read(), **self.small_tables}


@dataclass
class ShardChecks:
    rows: list[dict] = field(default_factory=list)  # stats/shards.parquet rows, one per shard
    messages: list[str] = field(default_factory=list)
    index_missing: bool = False
    in_shards: list = field(default_factory=list)  # per group of shards, its IN_SHARD table (ObjectRefs under Ray)
    unknown: list = field(default_factory=list)  # arrays of video_ids in shard records but not in the manifest


def shard_rows(out: BuildOutput, keys, tasks_in_flight: int | None = None) -> ShardChecks:
    """stats/shards.parquet rows (one per shard) from shards/index.json and the shard records; `keys` holds
    manifest/videos.parquet's video_id and duration_s (an ObjectRef under Ray). The records and tars are read by
    Ray tasks over groups of shards (`check_shard_group`); the driver reads the index only. Each group's
    (video_id, in_shard) table stays in the object store for the per-video rows (pipeline/stats/videos.py), which
    compare it with the manifest's `shard`."""
    checks = ShardChecks()
    if not out.exists(layout.SHARD_INDEX):
        checks.index_missing = True
        return checks
    entries = out.read_json(layout.SHARD_INDEX)["shardlist"]
    size = stats_schema.STATS_SHARDS_PER_TASK
    groups = (entries[i:i + size] for i in range(0, len(entries), size))
    for found, in_shard in remote.imap_with_payload("stats", check_shard_group, groups,
                                                    (out.root, storage.settings(), keys), "shard records",
                                                    total=-(-len(entries) // size), in_flight=tasks_in_flight):
        checks.rows += found["rows"]
        checks.messages += found["messages"]
        checks.in_shards.append(in_shard)
        checks.unknown.append(found["unknown"])
    return checks


def wrong_shard_message(checks: ShardChecks, claimed: int, wrong: int, examples: list[str]) -> list[str]:
    """The message on videos whose shard the manifest and the shard records disagree on: `claimed` videos name a
    shard in the manifest; `wrong` of the manifest's videos disagree (with their first sorted `examples`), to which
    the recorded videos missing from the manifest (`checks.unknown`) add."""
    if checks.index_missing:
        missing = f"{claimed} videos name a shard but {layout.SHARD_INDEX} is missing (rerun the `shard` stage)"
        return [missing] if claimed else []
    unknown = pc.unique(pa.chunked_array(checks.unknown, pa.string())) if checks.unknown else pa.array([], pa.string())
    if not wrong and not len(unknown):
        return []
    examples = sorted(examples + first_sorted(unknown))[:stats_schema.EXAMPLES]
    return [f"{wrong + len(unknown)} videos: manifest/videos.parquet and the shard records disagree on their "
            f"shard (e.g. {examples}; rerun the `shard` stage)"]


IN_SHARD = pa.schema([("video_id", pa.string()), ("in_shard", pa.string())])


def check_shard_group(entries: list[dict], root: str, settings, keys: pa.Table) -> tuple[dict, pa.Table]:
    """Entries of shards/index.json checked against their records and tars: (their stats/shards rows, messages and
    the recorded video_ids missing from `keys`; payload: the (video_id, in_shard) table of their records, spooled
    under Ray)."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    ids = keys["video_id"].combine_chunks()
    durations = keys["duration_s"].combine_chunks()
    rows, messages, in_shards = [], [], []
    for entry in entries:
        name = entry["url"]
        record_path = f"{layout.SHARD_RECORDS_DIR}/{layout.shard_stem(name)}.json"
        if not out.exists(record_path):
            messages.append(f"{layout.SHARD_INDEX} lists {name} but {record_path} is missing (rerun `shard`)")
            continue
        record = out.read_json(record_path)
        for key, rec_key in (("nsamples", "nsamples"), ("filesize", "filesize"), ("sha256", "sha256")):
            if entry.get(key) != record.get(rec_key):
                messages.append(f"{name}: {key} is {entry.get(key)} in {layout.SHARD_INDEX} but "
                                f"{record.get(rec_key)} in {record_path} (rerun the `shard` stage)")
        if len(record["video_ids"]) != record["nsamples"]:
            messages.append(f"{record_path} lists {len(record['video_ids'])} videos but nsamples "
                            f"{record['nsamples']}")
        tar = f"{layout.SHARDS_DIR}/{name}"
        if not out.exists(tar):
            messages.append(f"{tar} is missing (rerun the `shard` stage)")
        elif storage.size(out.uri(tar)) != record["filesize"]:
            messages.append(f"{tar} holds {storage.size(out.uri(tar))} bytes but its record says "
                            f"{record['filesize']} (rerun the `shard` stage)")
        members = pa.array(record["video_ids"], pa.string())
        in_shards.append(pa.table({"video_id": members, "in_shard": pa.array([name] * len(members), pa.string())}))
        rows.append({"shard": name, "samples": record["nsamples"], "bytes": record["filesize"],
                     "sha256": record["sha256"]})
    in_shard = pa.concat_tables(in_shards) if in_shards else IN_SHARD.empty_table()
    recorded = in_shard["video_id"]
    # one lookup of the group's videos in the manifest (hashing its ids once per group, not once per shard)
    positions = pc.index_in(recorded, value_set=ids)
    start = 0
    for row, shard in zip(rows, in_shards):
        mine = pc.drop_null(positions.slice(start, shard.num_rows))
        start += shard.num_rows
        duration = sum(d or 0.0 for d in pc.take(durations, mine).to_pylist())
        row.update({"duration_s": round(duration, 6), "hours": round(duration / 3600, 6)})
    unknown = pc.unique(pc.filter(recorded, pc.invert(pc.is_in(recorded, value_set=ids))))
    first = layout.shard_stem(entries[0]["url"])
    spooled = remote.spool(in_shard, out.uri(layout.stats_spool_path("in-shards", first)))
    return {"rows": rows, "messages": messages, "unknown": unknown.combine_chunks() if isinstance(
        unknown, pa.ChunkedArray) else unknown}, spooled


def reject_rows(input_rejects: list[tuple], rejected: int, annotation_rejects: Counter) -> list[dict]:
    """stats/rejects.parquet rows from the manifest rejects counted per (stage, reason) (`input_rejects`: (stage,
    reason, count, bytes) in first-seen order, `rejected` of them in all) and the annotation rejects counted per
    (task, reason group)."""
    rows = []
    for stage, reason, n, size in input_rejects:
        rows.append({"scope": "input", "stage": stage, "task": None, "reason": reason, "count": n,
                     "bytes": size, "share": round(n / rejected, 6)})
    total = sum(annotation_rejects.values())
    for (task, reason), n in annotation_rejects.items():
        rows.append({"scope": "annotation", "stage": "annotate", "task": task, "reason": reason, "count": n,
                     "bytes": None, "share": round(n / total, 6)})
    rows.sort(key=lambda r: (stats_schema.REJECT_SCOPES.index(r["scope"]), -r["count"], r["reason"], r["task"] or ""))
    return rows


def _require(out: BuildOutput, relative: str) -> None:
    if not out.exists(relative):
        raise StageInputMissing(f"{relative} is missing under {out.root}: run the ingest stages first")


def compute(out: BuildOutput, tasks_in_flight: int | None = None, member_rows: int | None = None,
            jsonl_bytes: int | None = None) -> BuildStats:
    """All four tables and the list of disagreements (empty when the build reconciles). Every check runs as Ray
    tasks, at most `tasks_in_flight` at a time (default: twice the cluster's CPUs), and the per-video data they pass
    on (the manifest's keys, annotation and HiCo counts, stage tags, shard membership) stays out of the driver, in
    the object store or spooled to work/stats-spool/ (pipeline/stats/remote.py `spool`; removed when the checks
    end, however they end): the driver holds per-shard results and the stats/videos rows of the groups in flight,
    spooled to a local Parquet file as they arrive (pipeline/stats/videos.py). A mixture task larger than
    `member_rows` rows or `jsonl_bytes` bytes (schemas.stats defaults) is checked in parts. None of these changes a
    byte of the tables."""
    for rel in (layout.MANIFEST_CRAWL, layout.MANIFEST_VIDEOS, layout.MANIFEST_REJECTS):
        _require(out, rel)
    try:
        return _compute(out, tasks_in_flight, member_rows, jsonl_bytes)
    finally:
        storage.remove_folder(out.uri(layout.STATS_SPOOL_DIR))


def _compute(out: BuildOutput, tasks_in_flight: int | None, member_rows: int | None,
             jsonl_bytes: int | None) -> BuildStats:
    settings = storage.settings()
    checked_inputs = remote.call(inputs.check_inputs, out.root, settings)
    keys = remote.call(inputs.manifest_keys, out.root, settings)
    shards = shard_rows(out, keys, tasks_in_flight)
    ann_messages: list[str] = []
    ann = read_annotations(out, keys, ann_messages, tasks_in_flight)
    hico_messages: list[str] = []
    hico = read_hico(out, keys, hico_messages, tasks_in_flight)
    mix = collect_mixtures(out, ann.lookups, keys, tasks_in_flight, member_rows, jsonl_bytes)
    sources = stats_videos.Sources(ann.videos, hico.stages, hico.random_videos, shards.in_shards,
                                   mix.stage_tags, shards.index_missing)
    videos = stats_videos.build_file(out, sources, tasks_in_flight)
    found_inputs = remote.get(checked_inputs)
    mismatches = found_inputs["messages"] + shards.messages
    mismatches += wrong_shard_message(shards, videos.claimed, videos.wrong_shard, videos.wrong_shard_examples)
    mismatches += ann_messages + hico_messages
    if hico.unknown:
        unknown = pc.unique(pa.chunked_array(hico.unknown, pa.string()))
        mismatches.append(f"HiCo tokens of {len(unknown)} videos not in manifest/videos.parquet (e.g. "
                          f"{first_sorted(unknown)}; rerun the `hico` stage)")
    mismatches += mix.mismatches
    built = {
        "shards": tables.to_table(shards.rows, stats_schema.SHARDS),
        "rejects": tables.to_table(reject_rows(found_inputs["rejects"], found_inputs["rejected"], ann.reject_counts),
                                   stats_schema.REJECTS),
        "stages": tables.to_table(sorted(mix.rows, key=lambda r: (r["stage"], r["task"])), stats_schema.STAGES),
    }
    return BuildStats(built, videos, mismatches, mix.built)


def check(result: BuildStats) -> None:
    if result.mismatches:
        lines = "\n".join(f"  - {m}" for m in result.mismatches)
        raise StatsMismatch(f"the build's counts do not reconcile ({len(result.mismatches)} problems):\n{lines}")


def write(out: BuildOutput, result: BuildStats) -> None:
    storage.commit_file_if_changed(result.videos.path, out.uri(layout.stats_table_path("videos")))
    for name, table in result.small_tables.items():
        storage.write_parquet(out.uri(layout.stats_table_path(name)), table)
