"""The build summary: counts that reconcile (stats/summary.json, deterministic) and the console table.

stats/summary.json holds the manifest's counts and, once the `stats` stage has run, a `stats` section aggregated from
its tables (annotations, HiCo clips, curriculum stages, random-weight rows). Both are read from the output folder, so
whichever writes the file (the `stats` stage or the runner after any stage) writes the same bytes.
"""

from __future__ import annotations

import json

from pipeline.core.progress import format_duration
from pipeline.ingest.manifest import Manifest
from pipeline.io import storage
from schemas import layout


def summarize(m: Manifest) -> dict:
    records = [s.record for s in m.shards if s.record is not None]
    return {
        "inputs": len(m.crawl),
        "accepted": len(m.videos),
        "rejected": len(m.rejects),
        "rejected_by_reason": m.reject_counts(),
        "pending_probe": m.probe_pending,
        "pending_scenes": m.scenes_pending,
        "hours": round(sum(v["duration_s"] for v in m.videos) / 3600, 6),
        "input_bytes": sum(v["bytes"] for v in m.videos),
        "shards": len(records),
        "shards_planned": len(m.shards),
        "shard_bytes": sum(r["filesize"] for r in records),
        "sharded_videos": sum(1 for v in m.videos if v["shard"]),
    }


def summarize_plan(plan, outcome) -> dict:
    """The same summary as `summarize(manifest.assemble(...))`, from the column plan (pipeline/ingest/shard_plan.py)
    after its partitions ran (`outcome`: the committed shard records and the videos in them)."""
    return {
        "inputs": plan.inputs,
        "accepted": outcome.videos,
        "rejected": plan.rejects.num_rows,
        "rejected_by_reason": _reason_counts(plan.rejects["reason"]),
        "pending_probe": plan.probe_pending,
        "pending_scenes": plan.scenes_pending,
        "hours": round(outcome.seconds / 3600, 6),
        "input_bytes": outcome.input_bytes,
        "shards": len(outcome.records),
        "shards_planned": len(plan.shards),
        "shard_bytes": sum(r["filesize"] for r in outcome.records),
        "sharded_videos": outcome.sharded,
    }


def _reason_counts(reasons) -> dict[str, int]:
    import pyarrow.compute as pc

    return dict(sorted((r["values"], r["counts"]) for r in pc.value_counts(reasons).to_pylist()))


def _total(values) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(values).as_py() or 0)


def summarize_persisted(out_uri: str) -> dict | None:
    """The same summary as `summarize(manifest.assemble(...))`, read from the manifest tables a finished `shard`
    stage persisted (column reads, no per-part work); None when they cannot stand in for it (missing, or some video
    not sharded yet, so the shard plan is not final). The columns are read a batch at a time (BuildOutput.batches, which
    hands Arrow's freed pages back after each row group): the driver holds no per-video column."""
    from pipeline.stats.sources import BuildOutput

    out = BuildOutput(out_uri)
    if not all(out.exists(p) for p in (layout.MANIFEST_CRAWL, layout.MANIFEST_VIDEOS, layout.MANIFEST_REJECTS,
                                        layout.SHARD_INDEX)):
        return None
    videos = out.open_parquet(layout.MANIFEST_VIDEOS)
    unsharded = pending_scenes = input_bytes = 0
    seconds = 0  # summed as Python floats in row order, as `summarize` sums them: the same figure to the last bit
    # `scenes` is read for its nulls only: one leaf of it carries them, at half the bytes of both (a row group of
    # `scenes` is most of what this read holds at once)
    for batch in out.batches(layout.MANIFEST_VIDEOS, ["bytes", "shard", _first_leaf(videos, "scenes"), "duration_s"],
                             layout.MANIFEST_BATCH_ROWS):
        counts = _group_counts(batch)
        unsharded, pending_scenes, input_bytes = (a + b for a, b in zip((unsharded, pending_scenes, input_bytes),
                                                                        counts))
        seconds = sum(batch.column("duration_s").to_pylist(), seconds)
    if unsharded:
        return None
    rejects, reasons = out.open_parquet(layout.MANIFEST_REJECTS), {}
    for group in range(rejects.metadata.num_row_groups):
        for reason, n in _reason_counts(rejects.read_row_group(group, columns=["reason"]).column("reason")).items():
            reasons[reason] = reasons.get(reason, 0) + n
    shardlist = out.read_json(layout.SHARD_INDEX)["shardlist"]
    return {
        "inputs": out.open_parquet(layout.MANIFEST_CRAWL).metadata.num_rows,
        "accepted": videos.metadata.num_rows,
        "rejected": rejects.metadata.num_rows,
        "rejected_by_reason": dict(sorted(reasons.items())),
        "pending_probe": 0,
        "pending_scenes": pending_scenes,
        "hours": round(seconds / 3600, 6),
        "input_bytes": input_bytes,
        "shards": len(shardlist),
        "shards_planned": len(shardlist),
        "shard_bytes": sum(e["filesize"] for e in shardlist),
        "sharded_videos": videos.metadata.num_rows,
    }


def _first_leaf(parquet, column: str) -> str:
    """The path of the first Parquet leaf of a nested column (e.g. scenes.list.element.start_s): read alone it gives
    the column with its nulls and lengths and one child field."""
    schema = parquet.metadata.schema
    return next(schema.column(j).path for j in range(len(schema)) if schema.column(j).path.startswith(column + "."))


def _group_counts(videos) -> tuple[int, int, int]:
    """(videos in no shard, videos without scenes, input bytes) of some manifest rows."""
    return videos.column("shard").null_count, videos.column("scenes").null_count, _total(videos.column("bytes"))


def stats_section(out_uri: str, summary: dict) -> dict | None:
    """Totals of the stats tables and whether they still describe the manifest; None before the `stats` stage ran."""
    from pipeline.stats import summary as stats_summary

    return stats_summary.section(out_uri, summary)


def write(out_uri: str, summary: dict) -> dict:
    """Write stats/summary.json (the summary, plus the `stats` section once the stats tables exist); returns it."""
    doc = dict(summary)
    section = stats_section(out_uri, summary)
    if section is not None:
        doc["stats"] = section
    data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
    storage.write_bytes_if_changed(storage.join(out_uri, layout.STATS_SUMMARY), data)
    return doc


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table(summary: dict, wall_s: float, stages: list[str], extra: list[tuple[str, object]] = ()) -> str:
    rows = [
        ("stages run", ",".join(stages)),
        ("inputs", summary["inputs"]),
        ("accepted", summary["accepted"]),
        ("rejected", summary["rejected"]),
    ]
    rows += [(f"  {reason}", n) for reason, n in summary["rejected_by_reason"].items()]
    if summary["pending_probe"]:
        rows.append(("not yet probed", summary["pending_probe"]))
    if summary["pending_scenes"]:
        rows.append(("no scenes yet", summary["pending_scenes"]))
    rows += [
        ("hours of video", f"{summary['hours']:.3f}"),
        ("shards", f"{summary['shards']} of {summary['shards_planned']} planned"),
        ("shard bytes", human_bytes(summary["shard_bytes"])),
        *extra,
        ("wall time", format_duration(wall_s)),
    ]
    width = max(len(str(k)) for k, _ in rows)
    lines = ["", "LongVid build summary", "-" * (width + 24)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)
