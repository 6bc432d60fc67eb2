"""The `stats` checks over every input and every accepted video, run in one Ray task each so that the driver holds
none of their per-video columns: the manifest's (video_id, duration_s) keys the other checks look videos up in
(handed on by reference), and the input reconciliation (crawl = accepted + rejected) with the input reject counts."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io import storage
from pipeline.stats.sources import BuildOutput, arrow_s3_operation
from schemas import layout
from schemas import stats as stats_schema

KEY_COLUMNS = ["video_id", "duration_s"]


def manifest_keys(root: str, settings) -> pa.Table:
    """manifest/videos.parquet's video_id and duration_s, in its order (one string and one float per video)."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    with arrow_s3_operation("GetObject", out.uri(layout.MANIFEST_VIDEOS)):
        return out.open_parquet(layout.MANIFEST_VIDEOS).read(columns=KEY_COLUMNS).combine_chunks()


def first_sorted(values: pa.Array | pa.ChunkedArray) -> list:
    """The first EXAMPLES values, sorted (the ids a consistency message quotes), taken with Arrow."""
    return pc.take(values, pc.sort_indices(values)[:stats_schema.EXAMPLES]).to_pylist()


def sorted_examples(values) -> list:
    """The first EXAMPLES of Python values, sorted (examples gathered from several parts)."""
    return sorted(values)[:stats_schema.EXAMPLES]


def reconcile(crawl: pa.ChunkedArray, accepted: pa.ChunkedArray, rejected: pa.ChunkedArray,
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
            mismatches.append(f"{len(uris)} inputs {what} (e.g. {first_sorted(uris)})")


def check_inputs(root: str, settings) -> dict:
    """The reconciliation's messages and the input rejects counted per (stage, reason): {"messages", "rejects":
    [(stage, reason, count, bytes)] in first-seen order, "rejected": all rejects}."""
    storage.configure(**dataclasses.asdict(settings))
    out = BuildOutput(root)
    messages: list[str] = []
    crawl = out.read_table(layout.MANIFEST_CRAWL, columns=["source_uri"])["source_uri"]
    with arrow_s3_operation("GetObject", out.uri(layout.MANIFEST_VIDEOS)):
        accepted = out.open_parquet(layout.MANIFEST_VIDEOS).read(columns=["source_uri"])["source_uri"]
    rejects = out.read_table(layout.MANIFEST_REJECTS, columns=["source_uri", "reason", "stage", "bytes"])
    reconcile(crawl, accepted, rejects["source_uri"], messages)
    del crawl, accepted
    counts, sizes = Counter(), Counter()
    for batch in rejects.select(["stage", "reason", "bytes"]).to_batches(layout.MANIFEST_BATCH_ROWS):
        for stage, reason, size in zip(*(batch.column(i).to_pylist() for i in range(3))):
            counts[(stage, reason)] += 1
            sizes[(stage, reason)] += size or 0
    return {"messages": messages, "rejects": [(s, r, n, sizes[(s, r)]) for (s, r), n in counts.items()],
            "rejected": rejects.num_rows}
