"""The sharded videos of a build, read from what the `shard` stage persisted (manifest/videos.parquet, in video_id
order, and shards/index.json) instead of assembling the manifest again: the stages that work shard by shard (hico,
annotate) plan from `iter_shards`, which reads the manifest in batches and holds one shard's rows at a time, and
their tasks read their own shard's rows with `read_shard`. `map_shard_groups` hands groups of consecutive shards to
Ray tasks, which read their shards' rows (`read_shards`) and make the per-shard checks of committed work (record
reads, existence checks), so the driver reads only the manifest's video_id and shard columns."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core import ray_runtime
from pipeline.core.columns import runs
from pipeline.core.context import StageContext, StageInputMissing
from pipeline.io import storage
from pipeline.stats.sources import BuildOutput
from schemas import layout


SHARDS_PER_TASK = 64  # shards a planning or export task handles (a few small storage requests per shard)


@dataclass(frozen=True)
class Shard:
    name: str
    uri: str
    sha256: str


def shard_names(ctx: StageContext) -> list[str]:
    """The committed shards, in order (from shards/index.json)."""
    return [e["url"] for e in _index(ctx)]


def _index(ctx: StageContext) -> list[dict]:
    return json.loads(storage.read_bytes(ctx.require(layout.SHARD_INDEX, "shard")))["shardlist"]


def _open(out: str, relative: str) -> pq.ParquetFile:
    return BuildOutput(out).open_parquet(relative)


def iter_shards(ctx: StageContext, columns: list[str]) -> Iterator[tuple[Shard, pa.Table]]:
    """Each committed shard with its videos' manifest rows (`columns` and `shard`). Raises StageInputMissing when
    the manifest is missing or a video is in no committed shard. Read a row group at a time with Arrow's freed pages
    handed back after each (`BuildOutput.batches`): one reader over the whole file kept ~0.4 KiB a video of them in
    the annotate and hico drivers (benchmarks/driver_attribution.py)."""
    ctx.require(layout.MANIFEST_VIDEOS, "shard")
    sha = {e["url"]: e["sha256"] for e in _index(ctx)}
    wanted = list(dict.fromkeys(["video_id", *columns, "shard"]))
    current, pieces = None, []

    def close() -> tuple[Shard, pa.Table]:
        return (Shard(current, ctx.uri(f"{layout.SHARDS_DIR}/{current}"), sha[current]),
                pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0])

    for batch in BuildOutput(ctx.out).batches(layout.MANIFEST_VIDEOS, wanted, layout.MANIFEST_BATCH_ROWS):
        table = pa.Table.from_batches([batch])
        names = table["shard"]
        missing = [n for n in names.unique().to_pylist() if n is None or n not in sha]
        if missing:
            at = names.to_pylist().index(missing[0])
            raise StageInputMissing(f"video {table['video_id'][at].as_py()} is in no committed shard: run the "
                                    "`shard` stage first")
        for name, start, stop in runs(names):
            if name != current:
                if current is not None:
                    yield close()
                current, pieces = name, []
            pieces.append(table.slice(start, stop - start))
    if current is not None:
        yield close()


def shard_groups(ctx: StageContext, shards_per_group: int | None = None) -> Iterator[list[Shard]]:
    """The committed shards of the manifest's videos (`iter_shards` over only the video_id and shard columns), in
    groups of up to `shards_per_group` (default SHARDS_PER_TASK) consecutive shards."""
    shards_per_group = shards_per_group or SHARDS_PER_TASK
    group: list[Shard] = []
    for shard, _ in iter_shards(ctx, []):
        group.append(shard)
        if len(group) >= shards_per_group:
            yield group
            group = []
    if group:
        yield group


def map_shard_groups(ctx: StageContext, stage: str, task: Callable[..., Any], shared_args: tuple,
                     shards_per_group: int | None = None, payload: bool = False) -> Iterator[Any]:
    """`task(group, *shared_args)` as one Ray task per group of consecutive shards (a list of Shard; the task reads
    its shards' rows with `read_shards`), a bounded number in flight; results in shard order. With `payload`, as in
    `ray_runtime.imap_units`: the task returns (result, payload) and this yields (result, payload's ObjectRef)."""
    return ray_runtime.imap_units(stage, task, shard_groups(ctx, shards_per_group), shared_args,
                                  "shards planned",
                                  total_items=len(_index(ctx)), items_of=len, payload=payload)


def _row_groups(f: pq.ParquetFile, first: str, last: str) -> list[int]:
    """The row groups whose `shard` statistics may hold a shard named between `first` and `last`."""
    leaves = f.metadata.schema
    stats_at = next(j for j in range(len(leaves)) if leaves.column(j).path == "shard")  # a leaf, not an Arrow field
    groups = []
    for g in range(f.metadata.num_row_groups):
        st = f.metadata.row_group(g).column(stats_at).statistics
        if st is None or not st.has_min_max or (st.min <= last and first <= st.max):
            groups.append(g)
    return groups


def read_shard(out: str, name: str, columns: list[str]) -> list[dict]:
    """One shard's manifest rows (`columns`), in video_id order: the row groups whose statistics may hold it."""
    return next(read_shards(out, [name], columns))


def read_shards(out: str, names: list[str], columns: list[str]) -> Iterator[list[dict]]:
    """The manifest rows (`columns`, in video_id order) of each of some consecutive shards, in the order of `names`,
    from one read of the row groups whose statistics may hold them (a task plans a group of shards this way)."""
    f = _open(out, layout.MANIFEST_VIDEOS)
    wanted = pa.array(names, pa.string())
    pieces = [pa.Table.from_batches([], schema=f.schema_arrow).select(list(dict.fromkeys([*columns, "shard"])))]
    # in batches, keeping only these shards' rows: a task holds its own rows, not whole 8,192-row groups
    for batch in f.iter_batches(layout.MANIFEST_BATCH_ROWS, row_groups=_row_groups(f, min(names), max(names)),
                                columns=list(dict.fromkeys([*columns, "shard"]))):
        mine = batch.filter(pc.is_in(batch.column("shard"), value_set=wanted))
        if mine.num_rows:
            pieces.append(pa.Table.from_batches([mine]))
    table = pa.concat_tables(pieces).combine_chunks()
    spans = {name: (start, stop) for name, start, stop in runs(table["shard"])}
    kept = table if "shard" in columns else table.drop_columns(["shard"])
    for name in names:
        start, stop = spans.get(name, (0, 0))
        yield kept.slice(start, stop - start).to_pylist()
