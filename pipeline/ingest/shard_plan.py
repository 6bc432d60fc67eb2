"""The manifest and shard plan over columns (the `shard` stage's, and the end of `probe` and `scenes` through
pipeline/ingest/manifest_refresh.py): the same manifest `manifest.assemble` builds (crawl list → probe parts →
dedup → scene parts → shard assignment), with no row and no Python object per video in the driver.

Ray tasks read the committed parts (pipeline/ingest/plan_rows.py) and return only fixed-width keys per row; the
rows stay in the object store. The driver decides with numpy over the keys — which probe rows are accepted, the
first of each content hash in source_uri order, video_id order, scene failures, the shard cut — and keeps, per
accepted video, its global probe row and its position among the accepted (int32 each). A gather task puts a run of
partitions' rows in video_id order; each partition task (a run of consecutive shards) slices its rows from it, makes
the sampling plans, sample documents and content digests, and returns its manifest rows, which are written row
group by row group as the partitions come back (`VideosWriter`). Reject rows (few) are taken from the object store
by Ray tasks too. The `scenes` stage's scan of the scene parts still to do reads the same keys (`scenes_todo`) and
hands each pending part its probe rows by reference (`pending_scene_parts`)."""

from __future__ import annotations

import array
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from compressors.row_groups import RowGroupWriter
from pipeline import sampling
from pipeline.core import parts, ray_runtime
from pipeline.core.context import StageContext, configure_worker
from pipeline.ingest import manifest, plan_rows, sharding
from pipeline.io import storage
from schemas import layout, reasons, tables

PARTS_PER_READ_TASK = 256  # committed probe or scene parts one Ray task reads for the plan
# Videos a gather task puts in video_id order for the partition tasks at least (whole partitions; one in the
# object store at a time, about 1 KiB each).
GATHER_ROWS = 8192
# Row groups of manifest/videos.parquet: a build of up to this many videos gets the single row group a whole-table
# write gives; larger ones are written one group at a time, so the writer never holds more.
VIDEOS_ROWS_PER_GROUP = 8192
PROBE_COLUMNS = plan_rows.PROBE_COLUMNS
CARRIED = plan_rows.CARRIED
sorted_crawl = plan_rows.sorted_crawl


@dataclass
class Plan:
    inputs: int  # crawl rows
    rejects: pa.Table  # tables.REJECTS, in source_uri order (a row per rejected input)
    probe_pending: int = 0
    scenes_pending: int = 0
    shards: list[tuple[int, int, int]] = field(default_factory=list)  # (index, first, end) over `videos`
    videos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # global probe row of each video
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # its position among the accepted
    reject_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # global probe rows rejected
    probe_rows: int = 0  # committed probe rows
    probe_starts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  # first global row of each group
    probe_groups: list = field(default_factory=list)  # ObjectRef of each probe group's rows
    scene_groups: list = field(default_factory=list)  # (first, end accepted position, ObjectRef) of scene groups
    scenes: int = 0  # scenes of the videos (set by run_partitions)

    @property
    def complete(self) -> bool:
        return self.probe_pending == 0

    def release(self) -> None:
        """Drops the references to the rows in the object store (Ray frees them once no task needs them)."""
        self.probe_groups, self.scene_groups = [], []


@dataclass
class Partition:
    index: int
    offset: int  # first row of its videos in the gathered rows
    count: int  # its videos
    shards: list[tuple[int, int, int]]  # (shard index, first row, end row) within `videos`
    gathered: object = None  # ObjectRef of the gathered rows holding its videos
    videos: pa.Table | None = None  # the rows of its shards (set in its task)


@dataclass
class _Committed:
    """The committed parts among a folder's planned ones, compactly: each one's index in the sorted array of the
    folder's part names and its (first, end) key; groups of them are made as the read tasks are submitted."""
    directory: str
    names: np.ndarray  # sorted names of the committed files (fixed-width bytes)
    found: array.array = field(default_factory=lambda: array.array("q"))  # index into `names` of each part found
    starts: array.array = field(default_factory=lambda: array.array("q"))
    stops: array.array = field(default_factory=lambda: array.array("q"))
    pending: int = 0  # keys of the planned parts not committed yet

    def __len__(self) -> int:
        return len(self.found)

    def groups(self, ctx: StageContext) -> Iterator[list[tuple[str, int, int]]]:
        """(URI, first, end) of the parts found, PARTS_PER_READ_TASK a group."""
        for g in range(0, len(self.found), PARTS_PER_READ_TASK):
            yield [(ctx.uri(f"{self.directory}/{self.names[self.found[i]].decode()}"), self.starts[i], self.stops[i])
                   for i in range(g, min(g + PARTS_PER_READ_TASK, len(self.found)))]


def _committed_names(ctx: StageContext, directory: str) -> np.ndarray:
    """The sorted names of the parts committed in `directory` (one listing), as fixed-width bytes."""
    return np.sort(np.array([rel.encode() for rel, _, _ in storage.list_committed(ctx.uri(directory))
                             if "/" not in rel], dtype="S"))


def _index_of(names: np.ndarray, name: str) -> int | None:
    at = int(np.searchsorted(names, name.encode()))
    return at if at < len(names) and names[at] == name.encode() else None


def _committed(ctx: StageContext, directory: str, spans: Iterator[tuple[str, int, int]]) -> _Committed:
    """Which of the planned parts `spans` are committed in `directory` (one listing)."""
    names = _committed_names(ctx, directory)
    c = _Committed(directory, names)
    for name, start, stop in spans:
        at = _index_of(names, name)
        if at is not None:
            c.found.append(at)
            c.starts.append(start)
            c.stops.append(stop)
        else:
            c.pending += stop - start
    return c


def _rejects(rows: pa.Table, reason, message, stage: str, duplicate_of=None) -> pa.Table:
    """tables.REJECTS rows of some probe rows (`manifest._reject` over columns)."""
    n = rows.num_rows
    columns = {"source_uri": rows["source_uri"], "source": rows["source"], "source_metadata": rows["source_metadata"],
               "reason": reason, "message": message,
               "duplicate_of": duplicate_of if duplicate_of is not None else pa.nulls(n, pa.string()),
               "sha256": rows["sha256"], "bytes": rows["bytes"], "stage": pa.array([stage] * n, pa.string())}
    return pa.table(columns).cast(tables.REJECTS)


def _duplicate_message(kept_uri, kept_id):
    return pc.binary_join_element_wise("same bytes as ", kept_uri, " (kept as video_id ", kept_id, ")", "")


class _IdKeys:
    """Sorted video_ids held as a fixed-width bytes array, read as `parts.part_spans` reads an Arrow column (a
    part's keys become strings one part at a time)."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, length: int) -> "_IdKeys":
        return _IdKeys(self.ids[start:start + length])

    def to_pylist(self) -> list[str]:
        return [k.decode() for k in self.ids.tolist()]


@dataclass
class _Probe:
    """What the probe parts decide: the global probe rows accepted (video_id order), duplicates with the rows they
    repeat, probe failures; and the video_ids and estimated sizes of the accepted (planning only)."""
    accepted: np.ndarray
    video_ids: np.ndarray
    sizes: np.ndarray
    duplicates: np.ndarray
    duplicate_of: np.ndarray
    failed: np.ndarray


def _read_probe(ctx: StageContext, plan: Plan, sizes: bool = True) -> _Probe:
    spans = ray_runtime.map_units("manifest", plan_rows.probe_spans, [None], (ctx,), "crawl list")[0]
    plan.inputs = spans["inputs"]
    names, starts = spans["names"], spans["starts"]
    del spans
    found = _committed(ctx, layout.PROBE_PARTS_DIR,
                       ((names[i].decode(), starts[i], starts[i + 1]) for i in range(len(names))))
    del names, starts
    plan.probe_pending = found.pending
    keys: dict[str, list] = {"rows": [], "ok": [], "sha": [], "video_id": [], "est": []}
    for result, ref in ray_runtime.imap_units("manifest", plan_rows.read_probe_group,
                                              ([uri for uri, *_ in g] for g in found.groups(ctx)), (ctx, sizes),
                                              "probe parts", total_items=len(found), items_of=len, payload=True):
        plan.probe_groups.append(ref)
        for k, values in keys.items():
            values.append(result[k])
    plan.probe_starts = np.cumsum([0] + keys.pop("rows"), dtype=np.int64)
    plan.probe_rows = int(plan.probe_starts[-1])
    ok, sha, ids, est = (np.concatenate(keys.pop(k)) if plan.probe_groups else np.zeros(0, t)
                         for k, t in (("ok", bool), ("sha", "S32"), ("video_id", "S1"), ("est", np.int64)))
    rows = np.flatnonzero(ok)  # source_uri order
    _, first, of = np.unique(sha[rows], return_index=True, return_inverse=True)
    keeper = rows[first[of.reshape(-1)]]  # the first row of each row's content
    del sha, first, of
    repeat = keeper != rows
    kept = rows[~repeat]
    accepted = kept[np.argsort(ids[kept], kind="stable")].astype(np.int32)
    return _Probe(accepted, ids[accepted], est[accepted], rows[repeat].astype(np.int32),
                  keeper[repeat].astype(np.int32), np.flatnonzero(~ok).astype(np.int32))


def _read_scenes(ctx: StageContext, plan: Plan,
                 video_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Each accepted video's scene status (plan_rows.SCENE_*), and the accepted positions, reasons and messages of
    the scene failures (few)."""
    found = _committed(ctx, layout.SCENES_PARTS_DIR, parts.iter_part_spans(
        _IdKeys(video_ids), ctx.cfg.scenes.part_size, manifest.scenes_settings(ctx)))
    plan.scenes_pending = found.pending
    units = ([(uri, _IdKeys(video_ids[start:stop]).to_pylist()) for uri, start, stop in g]
             for g in found.groups(ctx))
    status = np.full(len(video_ids), plan_rows.SCENE_ABSENT, np.int8)
    failed, why, message = [np.zeros(0, np.int64)], [], []
    for (result, ref), g in zip(ray_runtime.imap_units("manifest", plan_rows.read_scene_group, units, (ctx,),
                                                       "scenes parts", total_items=len(found), items_of=len,
                                                       payload=True), found.groups(ctx)):
        plan.scene_groups.append((g[0][1], g[-1][2], ref))
        positions = np.concatenate([np.arange(start, stop) for _, start, stop in g])
        status[positions] = result["status"]
        failed.append(positions[result["status"] == plan_rows.SCENE_FAILED])
        why += result["reason"]
        message += result["message"]
    return status, np.concatenate(failed), why, message


def _rejects_of(plan: Plan, p: _Probe, scene_failed: np.ndarray, why: list[str],
                message: list[str]) -> tuple[pa.Table, np.ndarray]:
    """The reject rows of probe failures, duplicates and scene failures in source_uri order, and their global probe
    rows: the probe rows they are made of are taken from the object store by a task per probe group holding any."""
    scene_rows = p.accepted[scene_failed]
    need = np.unique(np.concatenate([p.failed, p.duplicates, p.duplicate_of, scene_rows]))
    group_of = np.searchsorted(plan.probe_starts, need, side="right") - 1
    units = [(need[group_of == g] - plan.probe_starts[g], g) for g in np.unique(group_of)]
    base = pa.concat_tables([plan_rows.empty(tables.PROBE_PART, plan_rows.REJECT_BASE)] + list(
        ray_runtime.imap_units("manifest", _take_rows, units, (), "reject rows", total_items=len(need),
                               items_of=lambda u: len(u[0]), inputs_of=lambda u: (plan.probe_groups[u[1]],))))

    def rows(at: np.ndarray) -> pa.Table:
        return base.take(pa.array(np.searchsorted(need, at), pa.int64()))

    failed, duplicates, kept, scenes = rows(p.failed), rows(p.duplicates), rows(p.duplicate_of), rows(scene_rows)
    found = pa.concat_tables([
        _rejects(failed, failed["reason"], failed["message"], "probe"),
        _rejects(duplicates, pa.array([reasons.DUPLICATE] * duplicates.num_rows, pa.string()),
                 _duplicate_message(kept["source_uri"], kept["video_id"]), "dedup", kept["video_id"]),
        _rejects(scenes, pa.array(why, pa.string()), pa.array(message, pa.string()), "scenes")])
    order = pc.sort_indices(found["source_uri"])
    rows_of = np.concatenate([p.failed, p.duplicates, scene_rows]).astype(np.int32)
    return found.take(order).combine_chunks(), rows_of[order.to_numpy()]


def _take_rows(unit: tuple[np.ndarray, int], table: pa.Table) -> pa.Table:
    return plan_rows.take_rows(unit[0], table)


def build(ctx: StageContext) -> Plan:
    plan = Plan(0, tables.empty(tables.REJECTS))
    p = _read_probe(ctx, plan)
    status, scene_failed, why, message = _read_scenes(ctx, plan, p.video_ids)
    keep = status != plan_rows.SCENE_FAILED
    plan.videos, plan.positions = p.accepted[keep], np.flatnonzero(keep).astype(np.int32)
    sizes = p.sizes[keep]
    del p.video_ids, p.sizes, status, keep
    sh = ctx.cfg.shard
    plan.shards = [(k, a, b) for k, (a, b) in
                   enumerate(sharding.spans((int(s) for s in sizes), sh.target_bytes, sh.max_samples))]
    del sizes
    plan.rejects, plan.reject_rows = _rejects_of(plan, p, scene_failed, why, message)
    return plan


@dataclass
class ScenesTodo:
    """The `scenes` stage's scan, keys only: the accepted videos' global probe rows (video_id order, int32) and
    their video_ids (until the scene parts are named); the probe rows stay in the object store."""
    plan: Plan  # probe_pending, probe_starts and probe_groups (ObjectRefs) of the probe parts read
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    video_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, "S1"))  # dropped once the parts are known

    @property
    def probe_pending(self) -> int:
        return self.plan.probe_pending

    @property
    def complete(self) -> bool:
        return self.plan.complete


def scenes_todo(ctx: StageContext) -> ScenesTodo:
    """The crawl list and its committed probe parts, deduplicated, as the shard plan reads them (`_read_probe`,
    without the shard size estimates): what `pending_scene_parts` needs."""
    plan = Plan(0, tables.empty(tables.REJECTS))
    p = _read_probe(ctx, plan, sizes=False)
    return ScenesTodo(plan, p.accepted, p.video_ids)


def pending_scene_parts(ctx: StageContext, todo: ScenesTodo) -> Iterator[tuple[str, plan_rows.StoredRows]]:
    """(name, probe rows) of each scene part over the accepted videos not committed yet, in order. A Ray task takes
    the rows of a run of those parts, about GATHER_ROWS videos, from the probe groups; each part's rows are a slice
    of that object (the driver holds references only)."""
    import ray

    names = _committed_names(ctx, layout.SCENES_PARTS_DIR)
    pending = [(name, start, stop) for name, start, stop in parts.iter_part_spans(
        _IdKeys(todo.video_ids), ctx.cfg.scenes.part_size, manifest.scenes_settings(ctx))
        if _index_of(names, name) is None]
    todo.video_ids = np.zeros(0, "S1")
    del names
    remote = ray.remote(num_cpus=1, max_retries=2)(plan_rows.take_probe_rows)
    run: list[tuple[str, int, int]] = []
    rows = 0  # videos in `run`
    for k, part in enumerate(pending):
        run.append(part)
        rows += part[2] - part[1]
        if k + 1 < len(pending) and rows < GATHER_ROWS:
            continue
        wanted = np.concatenate([todo.accepted[start:stop] for _, start, stop in run])
        ref = remote.remote((wanted, todo.plan.probe_starts), ctx, *todo.plan.probe_groups)
        offset = 0
        for name, start, stop in run:
            yield name, plan_rows.StoredRows(ref, offset, stop - start)
            offset += stop - start
        run, rows = [], 0


def _gather(remote, ctx: StageContext, plan: Plan, first: int, end: int):
    """ObjectRef of the manifest rows (plan_rows.gather_rows) of videos [first, end) of the plan."""
    lo, hi = int(plan.positions[first]), int(plan.positions[end - 1]) + 1
    scene = [ref for start, stop, ref in plan.scene_groups if start < hi and stop > lo]
    unit = (plan.videos[first:end], plan.probe_starts, len(plan.probe_groups))
    return remote.remote(unit, ctx, *plan.probe_groups, *scene)


def partitions(ctx: StageContext, plan: Plan, shards_per_partition: int) -> Iterator[Partition]:
    """The plan's partitions, a run of consecutive shards each, in order; a gather task is started for each run of
    partitions of about GATHER_ROWS videos as the first of them is reached."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=2)(plan_rows.gather_rows)
    starts = list(range(0, len(plan.shards), shards_per_partition))
    gathered, base, gathered_end = None, 0, 0
    for p, first in enumerate(starts):
        group = plan.shards[first:first + shards_per_partition]
        start, stop = group[0][1], group[-1][2]
        if gathered is None or stop > gathered_end:
            base, gathered_end = start, stop
            for later in starts[p + 1:]:
                if gathered_end - base >= GATHER_ROWS:
                    break
                gathered_end = plan.shards[min(later + shards_per_partition, len(plan.shards)) - 1][2]
            gathered = _gather(remote, ctx, plan, base, gathered_end)
        yield Partition(p, start - base, stop - start, [(k, a - start, b - start) for k, a, b in group], gathered)


def with_videos(part: Partition, gathered: pa.Table) -> Partition:
    part.videos, part.gathered = gathered.slice(part.offset, part.count), None
    return part


def partition_videos(part: Partition, ctx: StageContext) -> list[tuple[int, list[dict], str]]:
    """(shard index, manifest rows, content digest) of each shard of a partition: the rows as
    `manifest.assemble` makes them (sampling plans added, `shard` not set yet)."""
    stages = ctx.cfg.sampling.stages
    settings = manifest.payload_settings(ctx)
    out = []
    for index, start, stop in part.shards:
        videos = part.videos.slice(start, stop - start).to_pylist()
        for v in videos:
            v["sampling"] = sampling.plan(v["reader_num_frames"], v["reader_fps"], stages, ctx.cfg.sampling.clip_len)
            v["shard"] = None
        digest = sharding.content_digest([manifest.sample_metadata(v) for v in videos], settings)
        out.append((index, videos, digest))
    return out


def partition_result(part: Partition, ctx: StageContext,
                     write_shard: Callable[[tuple[int, list[dict], str], StageContext], dict] | None = None) -> dict:
    """A partition's manifest rows (tables.VIDEOS), shard-reject rows and committed shard records, as
    `manifest.assemble` makes them: a shard whose committed record holds exactly its videos names them (and turns the
    videos it left out into rejects); any other shard is written with `write_shard` (the `shard` stage) or, without
    it, leaves its videos' `shard` unset."""
    records, rows, rejects, written = [], [], [], 0
    for index, videos, digest in partition_videos(part, ctx):
        record = manifest.committed_record(ctx, index, digest)
        if record is None and write_shard is not None:
            record = write_shard((index, videos, digest), ctx)
            written += 1
        if record is None:
            rows += videos
            continue
        left_out = {r["video_id"]: r for r in record.get(sharding.RECORD_REJECTS, ())}
        for v in videos:
            r = left_out.get(v["video_id"])
            if r is not None:  # source gone or changed since probe: a reject row (stage "shard")
                rejects.append(manifest.reject_row(v, r["reason"], r["message"], "shard"))
                continue
            v["shard"] = record["shard"]
            rows.append(v)
        records.append({k: record[k] for k in ("shard", "nsamples", "filesize", "sha256")})
    return {"records": records, "written": written, "videos": tables.to_table(rows, tables.VIDEOS),
            "rejects": rejects}


def check_partition(part: Partition, ctx: StageContext, gathered: pa.Table) -> dict:
    """One Ray task: `partition_result` without writing shards (the manifest after `probe` or `scenes`)."""
    configure_worker(ctx.cfg)
    return partition_result(with_videos(part, gathered), ctx)


@dataclass
class Outcome:
    records: list[dict] = field(default_factory=list)  # committed shard records, in shard order
    left_out: list[dict] = field(default_factory=list)  # reject rows of videos a committed shard left out
    written: int = 0  # shards written
    sharded: int = 0  # videos in a committed shard
    videos: int = 0  # manifest rows (the accepted videos)
    seconds: float = 0.0  # their duration, summed in video_id order
    input_bytes: int = 0


def run_partitions(ctx: StageContext, plan: Plan, stage: str, task: Callable[..., dict],
                   shards_per_partition: int, out: "VideosWriter | None") -> Outcome:
    """`task(partition, ctx, gathered rows)` over the plan's partitions (a bounded number in flight), the manifest
    rows fed to `out` in order; the left-out videos join the plan's rejects."""
    o = Outcome()
    for r in ray_runtime.imap_units(stage, task, partitions(ctx, plan, shards_per_partition), (ctx,), "videos",
                                    total_items=len(plan.videos), items_of=lambda p: p.count,
                                    inputs_of=lambda p: (p.gathered,)):
        videos = r["videos"]
        if out is not None:
            out.add(videos)
        o.videos += videos.num_rows
        o.seconds = sum(videos["duration_s"].to_pylist(), o.seconds)  # as `sum` over every row in order
        o.input_bytes += int(pc.sum(videos["bytes"]).as_py() or 0)
        plan.scenes += int(pc.sum(pc.fill_null(pc.list_value_length(videos["scenes"]), 0)).as_py() or 0)
        o.sharded += videos.num_rows - videos["shard"].null_count
        o.records += r["records"]
        o.left_out += r["rejects"]
        o.written += r["written"]
    plan.release()
    add_shard_rejects(plan, o.left_out)
    return o


def add_shard_rejects(plan: Plan, rows: list[dict]) -> None:
    """Videos the shard tasks left out (source gone or changed since probe; a few rows; the partition tasks
    already kept them out of the manifest rows) join the rejects, which stay in source_uri order."""
    if not rows:
        return
    rejects = pa.concat_tables([plan.rejects, tables.to_table(rows, tables.REJECTS)])
    plan.rejects = rejects.take(pc.sort_indices(rejects["source_uri"])).combine_chunks()


def reconcile(plan: Plan, outcome: Outcome) -> None:
    """Every input is in exactly one of the two tables (`manifest.reconcile`, over the probe rows): each committed
    probe row is a planned video or a reject, every input has one, and a planned video missing from the manifest
    rows is a shard reject."""
    seen = np.bincount(np.concatenate([plan.videos, plan.reject_rows]), minlength=plan.probe_rows)
    uris = plan.rejects["source_uri"]
    twice = int((seen > 1).sum()) + len(uris) - pc.count_distinct(uris).as_py()
    lost = int((seen == 0).sum()) + plan.inputs - plan.probe_rows
    left_out = len(plan.videos) - outcome.videos
    if twice or lost or len(uris) != len(plan.reject_rows) + left_out or left_out != len(outcome.left_out):
        raise manifest.ReconcileError(
            f"manifest does not reconcile: {plan.inputs} inputs, {outcome.videos} videos and {len(uris)} rejects: "
            f"{lost} inputs in neither table, {twice} listed twice, {len(outcome.left_out)} left out by shards")


class VideosWriter(RowGroupWriter):
    """manifest/videos.parquet written as the rows arrive, in row groups of VIDEOS_ROWS_PER_GROUP (the bytes a
    whole-table write gives while the build fits one group)."""

    def __init__(self, path: str):
        super().__init__(path, tables.VIDEOS, VIDEOS_ROWS_PER_GROUP)

    def _flush(self, n: int) -> None:
        super()._flush(n)
        # Arrow's allocator keeps the pages of a group's copy and encoding buffers once freed: without this the
        # shard driver held ~150 MiB of them for the rest of the stage at F = 0.25 (benchmarks/driver_attribution.py).
        pa.default_memory_pool().release_unused()


@contextmanager
def videos_writer(ctx: StageContext) -> Iterator[VideosWriter]:
    """A VideosWriter on a local file, committed to manifest/videos.parquet on clean exit when its bytes changed."""
    with storage.local_output_if_changed(ctx.uri(layout.MANIFEST_VIDEOS)) as path:
        writer = VideosWriter(path)
        try:
            yield writer
        finally:
            writer.close()


def write_rejects(ctx: StageContext, plan: Plan) -> None:
    storage.write_parquet(ctx.uri(layout.MANIFEST_REJECTS), plan.rejects)
