"""The Ray tasks of the shard plan (pipeline/ingest/shard_plan.py): they read the committed probe and scene parts,
hand the driver a few fixed-width keys per video and keep the rows themselves in the object store, where a gather
task puts a run of partitions' rows in video_id order for the partition tasks. The driver never holds a row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import sampling
from pipeline.core import parts
from pipeline.core.context import StageContext, configure_worker
from pipeline.ingest import manifest, sharding
from pipeline.io import storage
from schemas import layout, tables

PROBE_COLUMNS = [f.name for f in tables.PROBE_PART]
SCENE_COLUMNS = ["video_id", "ok", "reason", "message", "scenes"]
# Manifest columns a probe row carries (the rest — scenes, sampling, shard — are added per video).
CARRIED = [n for n in tables.VIDEOS.names if n not in ("scenes", "sampling", "shard")]
REJECT_BASE = ["source_uri", "source", "source_metadata", "sha256", "bytes", "video_id", "reason", "message"]
SCENE_OK, SCENE_FAILED, SCENE_ABSENT = 1, 0, -1  # a video's row in its committed scene part


def empty(schema: pa.Schema, columns: list[str]) -> pa.Table:
    return pa.schema([schema.field(c) for c in columns]).empty_table()


def read_group(uris: list[str], columns: list[str], schema: pa.Schema) -> pa.Table:
    read = [empty(schema, columns)] + [storage.read_parquet(uri, columns) for uri in uris]
    return pa.concat_tables(read, promote_options="permissive").combine_chunks()


def sorted_crawl(ctx: StageContext, columns: list[str] | None = None) -> pa.Table:
    """The crawl list (`columns`, or all) in source_uri order: the order of the probe parts' keys."""
    crawl = storage.read_parquet(ctx.require(layout.MANIFEST_CRAWL, "crawl"), columns)
    return crawl.take(pc.sort_indices(crawl["source_uri"]))


def probe_spans(_unit, ctx: StageContext) -> dict:
    """One Ray task: the number of inputs, and the name and first row of each probe part over the sorted crawl
    (`starts` ends with the number of inputs)."""
    configure_worker(ctx.cfg)
    uris = sorted_crawl(ctx, ["source_uri"])["source_uri"]
    spans = parts.part_spans(uris, ctx.cfg.probe.part_size, manifest.probe_settings(ctx))
    return {"inputs": len(uris), "names": np.array([name.encode() for name, _, _ in spans], dtype="S"),
            "starts": np.array([start for _, start, _ in spans] + [len(uris)], np.int64)}


def estimated_sizes(ctx: StageContext, rows: pa.Table) -> np.ndarray:
    """`sharding.estimated_bytes` of each probe row (int64; with the frames payload, the frame count of the frames
    stage's plan is made and dropped)."""
    sh = ctx.cfg.shard
    stages = ctx.cfg.sampling.stages
    frames = sh.payload == "frames" and sh.frames_stage in stages
    out = np.zeros(rows.num_rows, np.int64)
    columns = ["ok", "bytes", "width", "height", "reader_num_frames", "reader_fps"]
    k = 0
    for batch in rows.select(columns).to_batches(layout.MANIFEST_BATCH_ROWS):
        for v in batch.to_pylist():
            if v["ok"]:
                v["sampling"] = (sampling.plan(v["reader_num_frames"], v["reader_fps"],
                                               {sh.frames_stage: stages[sh.frames_stage]}, ctx.cfg.sampling.clip_len)
                                 if frames else [])
                out[k] = sharding.estimated_bytes(v, sh.payload, sh.frames_stage)
            k += 1
    return out


def read_probe_group(uris: list[str], ctx: StageContext, sizes: bool = True) -> tuple[dict, pa.Table]:
    """One Ray task: a group of committed probe parts (in crawl order). Returns the keys of its rows, in source_uri
    order — `ok`, `sha` (the content hash, 32 bytes; empty when not ok), `video_id` (bytes) and `est` (estimated
    shard bytes; zeros without `sizes`) — and, as the payload left in the object store, the rows themselves in that
    order."""
    configure_worker(ctx.cfg)
    rows = read_group(uris, PROBE_COLUMNS, tables.PROBE_PART)
    rows = rows.take(pc.sort_indices(rows["source_uri"]))
    ok = pc.fill_null(rows["ok"], False)
    shas = pc.if_else(ok, rows["sha256"], "").to_pylist()
    keys = {"rows": rows.num_rows, "ok": ok.to_numpy(zero_copy_only=False),
            "sha": np.array([bytes.fromhex(s or "") for s in shas], dtype="S32"),
            "video_id": np.array([v.encode() for v in pc.if_else(ok, rows["video_id"], "").to_pylist()], dtype="S"),
            "est": estimated_sizes(ctx, rows.set_column(rows.schema.get_field_index("ok"), "ok", ok)) if sizes
            else np.zeros(rows.num_rows, np.int64)}
    return keys, rows


def read_scene_group(group: list[tuple[str, list[str]]], ctx: StageContext) -> tuple[dict, pa.Table]:
    """One Ray task: a group of committed scene parts, each (URI, the video_ids it was planned for). Returns each of
    those videos' SCENE_OK / SCENE_FAILED / SCENE_ABSENT, in that order, and the reasons and messages of the failed
    ones; the payload is the parts' (video_id, scenes) rows."""
    configure_worker(ctx.cfg)
    rows = read_group([uri for uri, _ in group], SCENE_COLUMNS, tables.SCENES_PART)
    at = pc.index_in(pa.array([i for _, ids in group for i in ids], pa.string()), value_set=rows["video_id"])
    found = rows.take(at)
    status = np.where(pc.is_null(at).to_numpy(zero_copy_only=False), SCENE_ABSENT,
                      np.where(pc.fill_null(found["ok"], False).to_numpy(zero_copy_only=False), SCENE_OK,
                               SCENE_FAILED)).astype(np.int8)
    bad = pa.array(np.flatnonzero(status == SCENE_FAILED))
    keys = {"status": status, "reason": found["reason"].take(bad).to_pylist(),
            "message": found["message"].take(bad).to_pylist()}
    return keys, rows.select(["video_id", "scenes"])


def take_rows(positions: np.ndarray, table: pa.Table) -> pa.Table:
    """One Ray task: REJECT_BASE columns of some rows of a probe group (the rows a reject row is made of)."""
    return table.select(REJECT_BASE).take(pa.array(positions))


def gather_rows(unit: tuple[np.ndarray, np.ndarray, int], ctx: StageContext, *groups: pa.Table) -> pa.Table:
    """One Ray task: the manifest rows (CARRIED columns and `scenes`) of a run of videos in video_id order. `unit`:
    their global probe rows, the first global row of each probe group and the number of probe groups; `groups`: the
    probe groups' row tables, then the scene groups' (video_id, scenes) tables that hold these videos."""
    configure_worker(ctx.cfg)
    wanted, starts, n_probe = unit
    probe, scene = groups[:n_probe], groups[n_probe:]
    rows = _probe_rows(wanted, starts, probe, CARRIED)
    scenes = pa.concat_tables([empty(tables.SCENES_PART, ["video_id", "scenes"])] + list(scene))
    scene_col = scenes["scenes"].take(pc.index_in(rows["video_id"], value_set=scenes["video_id"]))
    return pa.Table.from_arrays([rows[n] for n in CARRIED] + [scene_col],
                                schema=pa.schema([tables.VIDEOS.field(n) for n in CARRIED + ["scenes"]]))


def _probe_rows(wanted: np.ndarray, starts: np.ndarray, probe: tuple[pa.Table, ...], columns: list[str]) -> pa.Table:
    """`columns` of the given global probe rows, in their order, from the probe groups' row tables."""
    group_of = np.searchsorted(starts, wanted, side="right") - 1
    pieces, where = [], []
    for g in np.unique(group_of):
        at = np.flatnonzero(group_of == g)
        pieces.append(probe[g].select(columns).take(pa.array(wanted[at] - starts[g])))
        where.append(at)
    rows = pa.concat_tables([empty(tables.PROBE_PART, columns)] + pieces)
    if where:
        rows = rows.take(pa.array(np.argsort(np.concatenate(where), kind="stable")))
    return rows


def take_probe_rows(unit: tuple[np.ndarray, np.ndarray], ctx: StageContext, *probe: pa.Table) -> pa.Table:
    """One Ray task: the probe rows (PROBE_COLUMNS) of some videos in the order given, for the `scenes` stage's part
    tasks. `unit`: their global probe rows and the first global row of each probe group; `probe`: the groups'
    rows."""
    configure_worker(ctx.cfg)
    wanted, starts = unit
    return _probe_rows(wanted, starts, probe, PROBE_COLUMNS)


class StoredRows:
    """Rows of a table in the Ray object store, `count` from `offset`: handed to a task by reference (the driver
    holds no row) and iterated as dicts where they are used (`manifest.ArrowRows`)."""

    def __init__(self, ref, offset: int, count: int):
        self.ref, self.offset, self.count = ref, offset, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        import ray

        yield from manifest.ArrowRows(ray.get(self.ref).slice(self.offset, self.count))
