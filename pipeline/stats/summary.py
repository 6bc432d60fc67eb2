"""The `stats` section of stats/summary.json: totals of the stats tables, per curriculum stage included."""

from __future__ import annotations

from collections import Counter, defaultdict

import pyarrow as pa

from pipeline.stats import tables as stats
from pipeline.stats.sources import BuildOutput
from schemas import layout

MIXTURES_NOT_BUILT = "not built (run the `mix` stage)"


def _map_totals(column: pa.ChunkedArray) -> dict[str, int]:
    totals: Counter = Counter()
    for entries in column.to_pylist():
        for key, n in entries or []:
            totals[key] += n
    return dict(sorted(totals.items()))


def _stages(tables: dict[str, pa.Table]) -> dict[str, dict]:
    per_stage: dict[str, dict] = defaultdict(lambda: {"samples": 0, "annotations": 0, "hours": 0.0,
                                                      "visual_tokens": 0, "text_tokens": 0, "tasks": {}})
    for r in tables["stages"].to_pylist():
        s = per_stage[r["stage"]]
        for key in ("samples", "annotations", "visual_tokens", "text_tokens"):
            s[key] += r[key] or 0
        s["hours"] = round(s["hours"] + (r["hours"] or 0.0), 6)
        s["tasks"][r["task"]] = r["samples"]
        if r["random_init"]:
            s["random_init"] = True
    videos = tables["videos"].select(["stage_tags", "duration_s"]).to_pylist()
    for stage, s in per_stage.items():
        mine = [v["duration_s"] or 0.0 for v in videos if stage in (v["stage_tags"] or [])]
        s["videos"] = len(mine)
        s["video_hours"] = round(sum(mine) / 3600, 6)
    return dict(sorted(per_stage.items()))


def read(out: BuildOutput) -> dict:
    """stats/summary.json as written, or the manifest's counts when it is missing."""
    if out.exists(layout.STATS_SUMMARY):
        return out.read_json(layout.STATS_SUMMARY)
    crawl = out.read_table(layout.MANIFEST_CRAWL, columns=["source_uri"]).num_rows
    durations = out.read_table(layout.MANIFEST_VIDEOS, columns=["duration_s"])["duration_s"].to_pylist() \
        if out.exists(layout.MANIFEST_VIDEOS) else []
    rejected = out.read_table(layout.MANIFEST_REJECTS, columns=["reason"]).num_rows \
        if out.exists(layout.MANIFEST_REJECTS) else 0
    return {"inputs": crawl, "accepted": len(durations), "rejected": rejected,
            "hours": round(sum(d or 0.0 for d in durations) / 3600, 6)}


def section(out_uri: str, summary: dict) -> dict | None:
    out = BuildOutput(out_uri)
    tables = stats.load(out)
    if tables is None:
        return None
    videos, rejects = tables["videos"], tables["rejects"].to_pylist()
    input_rejects = sum(r["count"] for r in rejects if r["scope"] == "input")
    mixture_stages = out.mixture_stages()
    stages = _stages(tables)
    up_to_date = (videos.num_rows == summary["accepted"] and input_rejects == summary["rejected"]
                  and tables["shards"].num_rows == summary["shards"] and sorted(stages) == mixture_stages)
    random_videos = sum(videos["random_init"].to_pylist())
    doc = {
        "up_to_date": up_to_date,
        "annotations": {
            "captions": sum(videos["captions"].to_pylist()),
            "qa": sum(videos["qa"].to_pylist()),
            "grounding": sum(videos["grounding"].to_pylist()),
            "rejected_outputs": sum(r["count"] for r in rejects if r["scope"] == "annotation"),
            "per_task": _map_totals(videos["annotations_per_task"]),
        },
        "hico_clips": _map_totals(videos["hico_clips"]),
        "curriculum": stages if mixture_stages else MIXTURES_NOT_BUILT,
        "random_init_videos": random_videos,
    }
    if not up_to_date:
        doc["note"] = "the stats tables describe an older state of this build: rerun the `stats` stage"
    return doc
