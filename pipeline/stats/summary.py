"""The `stats` section of stats/summary.json: totals of the stats tables, per curriculum stage included."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.stats.sources import BuildOutput
from schemas import layout
from schemas import stats as stats_schema

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


SECTION_COLUMNS = ["captions", "qa", "grounding", "annotations_per_task", "hico_clips", "random_init", "stage_tags",
                   "duration_s"]


class _VideoTotals:
    """The section's sums over stats/videos.parquet, added a batch at a time in row order (so each float sum is the
    left-to-right sum of the whole column): the driver holds no row per video."""

    def __init__(self, stages: list[str]):
        self.rows = 0
        self.totals = {"captions": 0, "qa": 0, "grounding": 0, "random_init": 0}
        self.maps: dict[str, dict[str, int]] = {"annotations_per_task": {}, "hico_clips": {}}
        self.stage_videos = dict.fromkeys(stages, 0)
        self.stage_seconds = dict.fromkeys(stages, 0.0)

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for name in ("captions", "qa", "grounding"):
            self.totals[name] += _total(batch.column(name))
        self.totals["random_init"] += _total(pc.cast(batch.column("random_init"), pa.int64()))
        for name, totals in self.maps.items():
            for key, n in _map_totals(pa.chunked_array([batch.column(name)])).items():
                totals[key] = totals.get(key, 0) + n
        tags = batch.column("stage_tags")
        flat, video_of_tag = pc.list_flatten(tags), pc.list_parent_indices(tags).to_numpy()
        durations = pc.fill_null(batch.column("duration_s"), 0.0).to_numpy()
        for stage in self.stage_videos:
            mine = np.unique(video_of_tag[pc.equal(flat, stage).to_numpy(zero_copy_only=False)])  # once each
            self.stage_videos[stage] += len(mine)
            self.stage_seconds[stage] = _sequential_sum(np.concatenate([[self.stage_seconds[stage]],
                                                                         durations[mine]]))


def _stages(stage_rows: list[dict], videos: _VideoTotals) -> dict[str, dict]:
    per_stage: dict[str, dict] = defaultdict(lambda: {"samples": 0, "annotations": 0, "hours": 0.0,
                                                      "visual_tokens": 0, "text_tokens": 0, "tasks": {}})
    for r in stage_rows:
        s = per_stage[r["stage"]]
        for key in ("samples", "annotations", "visual_tokens", "text_tokens"):
            s[key] += r[key] or 0
        s["hours"] = round(s["hours"] + (r["hours"] or 0.0), 6)
        s["tasks"][r["task"]] = r["samples"]
        if r["random_init"]:
            s["random_init"] = True
    for stage, s in per_stage.items():
        s["videos"] = videos.stage_videos[stage]
        s["video_hours"] = round(videos.stage_seconds[stage] / 3600, 6)
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
    paths = {name: layout.stats_table_path(name) for name in layout.STATS_TABLES}
    if not all(out.exists(p) for p in paths.values()):
        return None
    rejects = out.read_table(paths["rejects"]).to_pylist()
    stage_rows = out.read_table(paths["stages"]).to_pylist()
    videos = _VideoTotals(sorted({r["stage"] for r in stage_rows}))
    for batch in out.batches(paths["videos"], SECTION_COLUMNS, stats_schema.TABLE_BATCH_ROWS):
        videos.add(batch)
    input_rejects = sum(r["count"] for r in rejects if r["scope"] == "input")
    mixture_stages = out.mixture_stages()
    stages = _stages(stage_rows, videos)
    up_to_date = (videos.rows == summary["accepted"] and input_rejects == summary["rejected"]
                  and out.open_parquet(paths["shards"]).metadata.num_rows == summary["shards"]
                  and sorted(stages) == mixture_stages)
    doc = {
        "up_to_date": up_to_date,
        "annotations": {
            "captions": videos.totals["captions"],
            "qa": videos.totals["qa"],
            "grounding": videos.totals["grounding"],
            "rejected_outputs": sum(r["count"] for r in rejects if r["scope"] == "annotation"),
            "per_task": dict(sorted(videos.maps["annotations_per_task"].items())),
        },
        "hico_clips": dict(sorted(videos.maps["hico_clips"].items())),
        "curriculum": stages if mixture_stages else MIXTURES_NOT_BUILT,
        "random_init_videos": videos.totals["random_init"],
    }
    if not up_to_date:
        doc["note"] = "the stats tables describe an older state of this build: rerun the `stats` stage"
    return doc
