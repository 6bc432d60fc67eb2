"""The auditor tables of `stats/` (schemas/stats.py), computed from a build's output folder, and the reconciliation
that must hold before they are written: every input accepted or rejected exactly once, shard records agreeing with
the shard index and the tars, annotation counts agreeing with their shard records, HiCo clips with their records,
and every mixture file line with its membership table (pipeline/stats_mixtures.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import manifest, storage
from pipeline.context import StageInputMissing
from pipeline.stats_annotations import Annotations, read_annotations, read_hico
from pipeline.stats_mixtures import MixtureStats, collect as collect_mixtures
from pipeline.stats_sources import BuildOutput
from schemas import layout, tables
from schemas import stats as stats_schema
from schemas.mixture import CAPTION_TASK, GROUNDING_TASK, SUMMARY_TASK

EXAMPLES = 3


class StatsMismatch(RuntimeError):
    """The build's counts do not reconcile; the message lists every disagreement and how to fix it."""


@dataclass
class BuildStats:
    tables: dict[str, pa.Table]
    mismatches: list[str]
    mixtures_built: bool


def _reconcile_inputs(crawl: list[str], videos: list[dict], rejects: list[dict], mismatches: list[str]) -> None:
    accepted = [v["source_uri"] for v in videos]
    rejected = [r["source_uri"] for r in rejects]
    if len(crawl) != len(accepted) + len(rejected):
        mismatches.append(f"inputs ({len(crawl)}) != accepted ({len(accepted)}) + rejected ({len(rejected)}) in "
                          "manifest/crawl, videos and rejects.parquet (rerun the ingest stages)")
    seen = Counter(accepted + rejected)
    twice = sorted(u for u, n in seen.items() if n > 1)
    lost = sorted(set(crawl) - set(seen))
    extra = sorted(set(seen) - set(crawl))
    for what, uris in (("in neither manifest table", lost), ("listed more than once", twice),
                       ("not in manifest/crawl.parquet", extra)):
        if uris:
            mismatches.append(f"{len(uris)} inputs {what} (e.g. {uris[:EXAMPLES]})")


def shard_rows(out: BuildOutput, videos: list[dict], mismatches: list[str]) -> list[dict]:
    """stats/shards.parquet rows from shards/index.json and the shard records; disagreements go to `mismatches`."""
    if not out.exists(layout.SHARD_INDEX):
        sharded = [v["video_id"] for v in videos if v["shard"]]
        if sharded:
            mismatches.append(f"{len(sharded)} videos name a shard but {layout.SHARD_INDEX} is missing "
                              "(rerun the `shard` stage)")
        return []
    by_id = {v["video_id"]: v for v in videos}
    rows, in_shards = [], {}
    for entry in out.read_json(layout.SHARD_INDEX)["shardlist"]:
        name = entry["url"]
        record_path = f"{layout.SHARD_RECORDS_DIR}/{layout.shard_stem(name)}.json"
        if not out.exists(record_path):
            mismatches.append(f"{layout.SHARD_INDEX} lists {name} but {record_path} is missing (rerun `shard`)")
            continue
        record = out.read_json(record_path)
        for key, rec_key in (("nsamples", "nsamples"), ("filesize", "filesize"), ("sha256", "sha256")):
            if entry.get(key) != record.get(rec_key):
                mismatches.append(f"{name}: {key} is {entry.get(key)} in {layout.SHARD_INDEX} but "
                                  f"{record.get(rec_key)} in {record_path} (rerun the `shard` stage)")
        if len(record["video_ids"]) != record["nsamples"]:
            mismatches.append(f"{record_path} lists {len(record['video_ids'])} videos but nsamples "
                              f"{record['nsamples']}")
        tar = f"{layout.SHARDS_DIR}/{name}"
        if not out.exists(tar):
            mismatches.append(f"{tar} is missing (rerun the `shard` stage)")
        elif storage.size(out.uri(tar)) != record["filesize"]:
            mismatches.append(f"{tar} holds {storage.size(out.uri(tar))} bytes but its record says "
                              f"{record['filesize']} (rerun the `shard` stage)")
        for vid in record["video_ids"]:
            in_shards[vid] = name
        duration = sum(by_id[v]["duration_s"] or 0.0 for v in record["video_ids"] if v in by_id)
        rows.append({"shard": name, "samples": record["nsamples"], "bytes": record["filesize"],
                     "sha256": record["sha256"], "duration_s": round(duration, 6), "hours": round(duration / 3600, 6)})
    claimed = {v["video_id"]: v["shard"] for v in videos if v["shard"]}
    wrong = sorted(vid for vid in set(claimed) | set(in_shards) if claimed.get(vid) != in_shards.get(vid))
    if wrong:
        mismatches.append(f"{len(wrong)} videos: manifest/videos.parquet and the shard records disagree on their "
                          f"shard (e.g. {wrong[:EXAMPLES]}; rerun the `shard` stage)")
    return rows


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


def _video_rows(videos: list[dict], ann: Annotations, hico_clips: dict, random_hico: set[str],
                mix: MixtureStats) -> list[dict]:
    rows = []
    for v in sorted(videos, key=lambda v: v["video_id"]):
        vid = v["video_id"]
        per_task = ann.per_video.get(vid, Counter())
        scenes = v["scenes"]  # counted with Arrow when read
        duration = v["duration_s"] or 0.0
        row = {name: v[name] for name in stats_schema.VIDEO_COPIED_COLUMNS}
        row.update({
            "scenes": scenes,
            "scenes_per_minute": round(scenes / (duration / 60), 6) if scenes is not None and duration > 0 else None,
            "frames_per_stage": v["frames_per_stage"],
            "annotations_per_task": sorted(per_task.items()),
            "captions": per_task[CAPTION_TASK] + per_task[SUMMARY_TASK],
            "qa": sum(n for t, n in per_task.items() if t not in (CAPTION_TASK, SUMMARY_TASK, GROUNDING_TASK)),
            "grounding": per_task[GROUNDING_TASK],
            "annotation_rejects": ann.rejects_per_video.get(vid, 0),
            "stage_tags": sorted(mix.stage_tags.get(vid, ())),
            "hico_clips": sorted(hico_clips.get(vid, {}).items()),
            "random_init": vid in ann.random_videos or vid in random_hico,
        })
        rows.append(row)
    return rows


def _require(out: BuildOutput, relative: str) -> None:
    if not out.exists(relative):
        raise StageInputMissing(f"{relative} is missing under {out.root}: run the ingest stages first")


def compute(out: BuildOutput) -> BuildStats:
    """All four tables and the list of disagreements (empty when the build reconciles)."""
    for rel in (layout.MANIFEST_CRAWL, layout.MANIFEST_VIDEOS, layout.MANIFEST_REJECTS):
        _require(out, rel)
    mismatches: list[str] = []
    crawl = out.read_table(layout.MANIFEST_CRAWL, columns=["source_uri"])["source_uri"].to_pylist()
    video_columns = list(stats_schema.VIDEO_COPIED_COLUMNS)
    manifest_videos = out.read_table(layout.MANIFEST_VIDEOS, columns=[*video_columns, "scenes", "sampling"])
    frames = manifest.plan_frame_counts(manifest_videos["sampling"])
    scenes = pc.list_value_length(manifest_videos["scenes"]).to_pylist()
    videos = manifest_videos.select(video_columns).to_pylist()
    accepted_ids = manifest_videos["video_id"].combine_chunks()
    del manifest_videos
    for v, f, n in zip(videos, frames, scenes):
        v["frames_per_stage"], v["scenes"] = f, n
    del frames, scenes
    rejects = out.read_table(layout.MANIFEST_REJECTS, columns=["source_uri", "reason", "stage", "bytes"]).to_pylist()
    _reconcile_inputs(crawl, videos, rejects, mismatches)
    del crawl
    shards = shard_rows(out, videos, mismatches)
    ann = read_annotations(out, accepted_ids, mismatches)
    hico_clips, random_hico = read_hico(out, mismatches)
    unknown = set(hico_clips) - set(accepted_ids.to_pylist())
    if unknown:
        mismatches.append(f"HiCo tokens of {len(unknown)} videos not in manifest/videos.parquet (e.g. "
                          f"{sorted(unknown)[:EXAMPLES]}; rerun the `hico` stage)")
    mix = collect_mixtures(out, ann.row_videos, ann.random_rows, accepted_ids)
    mismatches += mix.mismatches
    built = {
        "videos": tables.to_table(_video_rows(videos, ann, hico_clips, random_hico, mix), stats_schema.VIDEOS),
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
