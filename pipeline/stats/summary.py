"""The `stats` section of stats/summary.json: totals of the stats tables, per curriculum stage included."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.stats import tables as stats
from pipeline.stats.sources import BuildOutput
from schemas import layout

MIXTURES_NOT_BUILT = "not built (run the `mix` stage)"


def _map_totals(column: pa.ChunkedArray) -> dict[str, int]:
    """key -> summed values of a map column (one map per video), with Arrow: no Python object per video."""
    keys, values = [], []
    for chunk in column.chunks:
        first, last = (chunk.offsets[0].as_py(), chunk.offsets[-1].as_py()) if len(chunk) else (0, 0)
        keys.append(chunk.keys.slice(first, last - first))
        values.append(chunk.items.slice(first, last - first))
    if not sum(len(k) for k in keys):
        return {}
    flat = pa.table({"key": pa.chunked_array(keys), "value": pa.chunked_array(values)})
    totals = flat.group_by("key", use_threads=False).aggregate([("value", "sum")]).to_pylist()
    return {r["key"]: r["value_sum"] for r in sorted(totals, key=lambda r: r["key"])}


def _total(column: pa.ChunkedArray) -> int:
    return int(pc.sum(column).as_py() or 0)


def _sequential_sum(values: np.ndarray) -> float:
    """Python's `sum` of floats (added left to right, as the summary always did), without a Python float per
    value: numpy's accumulate adds in order, unlike np.sum's pairwise summation."""
    return float(np.add.accumulate(values)[-1]) if len(values) else 0


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
    videos = tables["videos"]
    tags = pa.chunked_array([pc.list_flatten(c) for c in videos["stage_tags"].chunks], pa.string())
    owners = pa.chunked_array([pc.list_parent_indices(c) for c in videos["stage_tags"].chunks], pa.int64())
    offsets = np.cumsum([0] + [len(c) for c in videos["stage_tags"].chunks[:-1]], dtype=np.int64)
    video_of_tag = np.concatenate([o.to_numpy() + offsets[i] for i, o in enumerate(owners.chunks)]) if \
        owners.num_chunks else np.zeros(0, np.int64)
    durations = pc.fill_null(videos["duration_s"], 0.0).to_numpy()
    for stage, s in per_stage.items():
        mine = np.unique(video_of_tag[pc.equal(tags, stage).to_numpy(zero_copy_only=False)])  # ascending, once each
        s["videos"] = len(mine)
        s["video_hours"] = round(_sequential_sum(durations[mine]) / 3600, 6)
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
    random_videos = int(pc.sum(pc.cast(videos["random_init"], pa.int64())).as_py() or 0)
    doc = {
        "up_to_date": up_to_date,
        "annotations": {
            "captions": _total(videos["captions"]),
            "qa": _total(videos["qa"]),
            "grounding": _total(videos["grounding"]),
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
