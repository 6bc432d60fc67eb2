"""The auditor tables of `stats/` (schemas/stats.py), computed from a build's output folder, and the reconciliation
that must hold before they are written: every input accepted or rejected exactly once, shard records agreeing with
the shard index and the tars, annotation counts agreeing with their shard records, HiCo clips with their records,
and every mixture file line with its membership table (pipeline/stats/mixtures.py)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.context import StageInputMissing
from pipeline.io import storage
from pipeline.stats import remote
from pipeline.stats import videos as stats_videos
from pipeline.stats.annotations import read_annotations, read_hico
from pipeline.stats.mixtures import collect as collect_mixtures
from pipeline.stats.sources import BuildOutput, arrow_s3_operation
from schemas import layout, tables
from schemas import stats as stats_schema
from schemas.errors import LongVidError


class StatsMismatch(LongVidError, RuntimeError):
    """The build's counts do not reconcile; the message lists every disagreement and how to fix it."""


@dataclass
class BuildStats:
    tables: dict[str, pa.Table]
    mismatches: list[str]
    mixtures_built: bool


def _first_sorted(values: pa.Array | pa.ChunkedArray) -> list[str]:
    return pc.take(values, pc.sort_indices(values)[:stats_schema.EXAMPLES]).to_pylist()


def _reconcile_inputs(crawl: pa.ChunkedArray, accepted: pa.ChunkedArray, rejected: pa.ChunkedArray,
                      mismatches: list[str]) -> None:
    """Every crawled input is accepted or rejected exactly once (source_uri arrays, compared with Arrow)."""
    if len(crawl) != len(accepted) + len(rejected):
        mismatches.append(f"inputs ({len(crawl)}) != accepted ({len(accepted)}) + rejected ({len(rejected)}) in "
                          "manifest/crawl, videos and rejects.parquet (rerun the ingest stages)")
    seen = pa.chunked_array(accepted.chunks + rejected.chunks, pa.string())
    counts = pc.value_counts(seen)
    twice = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    lost = pc.unique(pc.filter(crawl, pc.invert(pc.is_in(crawl, value_set=counts.field("values")))))
    extra = pc.filter(counts.field("values"), pc.invert(pc.is_in(counts.field("values"), value_set=pc.unique(crawl))))
    for what, uris in (("in neither manifest table", lost), ("listed more than once", twice),
                       ("not in manifest/crawl.parquet", extra)):
        if len(uris):
            mismatches.append(f"{len(uris)} inputs {what} (e.g. {_first_sorted(uris)})")


def shard_rows(out: BuildOutput, videos: pa.Table, mismatches: list[str],
               tasks_in_flight: int | None = None) -> list[dict]:
    """stats/shards.parquet rows (one per shard) from shards/index.json and the shard records; `videos` holds
    manifest/videos.parquet's video_id, shard and duration_s; disagreements go to `mismatches`. The records and tars
    are read by Ray tasks over groups of shards (`check_shard_group`); the driver reads the index only."""
    claimed = videos.filter(pc.fill_null(pc.not_equal(videos["shard"], ""), False)).select(["video_id", "shard"])
    if not out.exists(layout.SHARD_INDEX):
        if claimed.num_rows:
            mismatches.append(f"{claimed.num_rows} videos name a shard but {layout.SHARD_INDEX} is missing "
                              "(rerun the `shard` stage)")
        return []
    entries = out.read_json(layout.SHARD_INDEX)["shardlist"]
    size = stats_schema.STATS_SHARDS_PER_TASK
    groups = (entries[i:i + size] for i in range(0, len(entries), size))
    rows, in_shards = [], []
    for found, _ in remote.imap_with_payload("stats", check_shard_group, groups,
                                             (out.root, storage.settings(), videos.select(["video_id", "duration_s"])),
                                             "shard records", total=-(-len(entries) // size),
                                             in_flight=tasks_in_flight):
        rows += found["rows"]
        mismatches += found["messages"]
        in_shards.append(found["in_shard"])
    recorded = pa.concat_tables(in_shards) if in_shards else IN_SHARD.empty_table()
    both = claimed.join(recorded, "video_id", join_type="full outer")
    wrong = pc.unique(pc.filter(both["video_id"], pc.invert(pc.fill_null(pc.equal(both["shard"], both["in_shard"]),
                                                                         False))))
    if len(wrong):
        mismatches.append(f"{len(wrong)} videos: manifest/videos.parquet and the shard records disagree on their "
                          f"shard (e.g. {_first_sorted(wrong)}; rerun the `shard` stage)")
    return rows


IN_SHARD = pa.schema([("video_id", pa.string()), ("in_shard", pa.string())])


def check_shard_group(entries: list[dict], root: str, settings, videos: pa.Table) -> tuple[dict, None]:
    """Entries of shards/index.json checked against their records and tars: (their stats/shards rows, messages and
    (video_id, in_shard) table; no payload)."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    ids = videos["video_id"].combine_chunks()
    durations = videos["duration_s"].combine_chunks()
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
        positions = pc.drop_null(pc.index_in(members, value_set=ids))
        duration = sum(d or 0.0 for d in pc.take(durations, positions).to_pylist())
        rows.append({"shard": name, "samples": record["nsamples"], "bytes": record["filesize"],
                     "sha256": record["sha256"], "duration_s": round(duration, 6), "hours": round(duration / 3600, 6)})
    in_shard = pa.concat_tables(in_shards) if in_shards else IN_SHARD.empty_table()
    return {"rows": rows, "messages": messages, "in_shard": in_shard}, None


def reject_rows(rejects: list[dict], annotation_rejects: Counter) -> list[dict]:
    """stats/rejects.parquet rows from manifest rejects (stage, reason, bytes) and the annotation rejects counted per
    (task, reason group)."""
    rows = []
    inputs = Counter((r["stage"], r["reason"]) for r in rejects)
    input_bytes = Counter()
    for r in rejects:
        input_bytes[(r["stage"], r["reason"])] += r["bytes"] or 0
    for (stage, reason), n in inputs.items():
        rows.append({"scope": "input", "stage": stage, "task": None, "reason": reason, "count": n,
                     "bytes": input_bytes[(stage, reason)], "share": round(n / len(rejects), 6)})
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
    """All four tables and the list of disagreements (empty when the build reconciles). The annotation reads and
    the mixture checks run as Ray tasks, at most `tasks_in_flight` at a time (default: twice the cluster's CPUs);
    a mixture task larger than `member_rows` rows or `jsonl_bytes` bytes (schemas.stats defaults) is checked in
    parts. None of these changes a byte of the tables."""
    for rel in (layout.MANIFEST_CRAWL, layout.MANIFEST_VIDEOS, layout.MANIFEST_REJECTS):
        _require(out, rel)
    mismatches: list[str] = []
    crawl = out.read_table(layout.MANIFEST_CRAWL, columns=["source_uri"])["source_uri"]
    with arrow_s3_operation("GetObject", out.uri(layout.MANIFEST_VIDEOS)):  # pyarrow's own S3 client
        video_table = stats_videos.read_manifest_videos(out)
    accepted_ids = video_table["video_id"].combine_chunks()
    rejects = out.read_table(layout.MANIFEST_REJECTS, columns=["source_uri", "reason", "stage", "bytes"])
    _reconcile_inputs(crawl, video_table["source_uri"], rejects["source_uri"], mismatches)
    del crawl
    shards = shard_rows(out, video_table.select(["video_id", "shard", "duration_s"]), mismatches, tasks_in_flight)
    rejects = rejects.to_pylist()  # one row per rejected input (a small share of the inputs)
    ann = read_annotations(out, accepted_ids, mismatches, tasks_in_flight)
    hico_clips, random_hico = read_hico(out, mismatches, tasks_in_flight)
    hico_ids = pa.chunked_array([t["video_id"] for t in hico_clips], pa.string())
    unknown = pc.unique(pc.filter(hico_ids, pc.invert(pc.is_in(hico_ids, value_set=accepted_ids)))).to_pylist()
    if unknown:
        mismatches.append(f"HiCo tokens of {len(unknown)} videos not in manifest/videos.parquet (e.g. "
                          f"{sorted(unknown)[:stats_schema.EXAMPLES]}; rerun the `hico` stage)")
    mix = collect_mixtures(out, ann.lookup, accepted_ids, tasks_in_flight, member_rows, jsonl_bytes)
    mismatches += mix.mismatches
    built = {
        "videos": stats_videos.build(video_table, ann.task_counts, ann.reject_video_counts, hico_clips,
                                     mix.stage_tags, ann.random_videos + random_hico),
        "shards": tables.to_table(shards, stats_schema.SHARDS),
        "rejects": tables.to_table(reject_rows(rejects, ann.reject_counts), stats_schema.REJECTS),
        "stages": tables.to_table(sorted(mix.rows, key=lambda r: (r["stage"], r["task"])), stats_schema.STAGES),
    }
    return BuildStats(built, mismatches, mix.built)


def check(result: BuildStats) -> None:
    if result.mismatches:
        lines = "\n".join(f"  - {m}" for m in result.mismatches)
        raise StatsMismatch(f"the build's counts do not reconcile ({len(result.mismatches)} problems):\n{lines}")


def write(out: BuildOutput, result: BuildStats) -> None:
    for name, table in result.tables.items():
        storage.write_parquet(out.uri(layout.stats_table_path(name)), table)


def load(out: BuildOutput) -> dict[str, pa.Table] | None:
    """The stats tables as written, or None when the `stats` stage has not run."""
    paths = {name: layout.stats_table_path(name) for name in layout.STATS_TABLES}
    if not all(out.exists(p) for p in paths.values()):
        return None
    return {name: out.read_table(p) for name, p in paths.items()}
