"""hico: HiCo clip tokens for every sharded video — decode the configured stage's sampled frames, encode clips of 4
with the UMT video encoder on actor-pool workers (GPU when the cluster has them), merge to 16 tokens per frame, and
write one Parquet file per shard plus an index."""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pyarrow as pa

from pipeline.core import orphans, ray_runtime, tempdirs
from pipeline.core.committed import committed_record
from pipeline.core.context import StageContext, StageInputMissing, configure_worker
from pipeline.core.parts import settings_digest
from pipeline.ingest import sharded_videos, sharding
from pipeline.io import frames as frame_io
from pipeline.io import storage
from schemas import layout
from schemas.config import BuildConfig

log = logging.getLogger(__name__)

NAME = "hico"
DESCRIPTION = "HiCo clip tokens (UMT encoder + ToMe merging) to Parquet, one file per shard"


def resolve_device(cfg: BuildConfig) -> tuple[float, str]:
    return resolve_gpus(cfg.hico.num_gpus)


def resolve_gpus(gpus: float | None) -> tuple[float, str]:
    """(num_gpus per actor, torch device): a configured count, or 1 when the cluster offers GPUs, else 0 (CPU)."""
    import ray

    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return gpus, ("cuda" if gpus > 0 else "cpu")


def weights_digest(cfg: BuildConfig) -> str:
    """The encoder weights' content hash (cached per machine), the key of resume and each row's weights_sha256."""
    from compressors.weights_hash import file_sha256

    enc = cfg.hico.encoder
    if not enc.checkpoint:
        return f"random-init-seed-{enc.seed}"
    return file_sha256(enc.checkpoint)


class HicoShardEncoder:
    """Ray Data actor: loads the encoder once, then turns whole shards into committed token files."""

    def __init__(self, cfg: BuildConfig, device: str):
        from compressors.dtypes import torch_dtype
        from compressors.encoder import VideoEncoderConfig, load_encoder
        from compressors.hico import ClipEncoder

        configure_worker(cfg)
        self.cfg = cfg
        h = cfg.hico
        enc_cfg = getattr(VideoEncoderConfig, h.encoder.preset)()
        dtype = torch_dtype(h.dtype, device)
        model, report = load_encoder(h.encoder.checkpoint, enc_cfg, key_prefix=h.encoder.key_prefixes,
                                     allow_random_init=h.encoder.allow_random_init, device=device, dtype=dtype,
                                     seed=h.encoder.seed)
        self.encoder = ClipEncoder(model, enc_cfg, report, h.tokens_per_frame, h.batch_clips, device, dtype,
                                   merge_dtype=h.merge_dtype, resize=h.resize)
        if report.checkpoint:
            log.info(f"[hico] encoder weights {report.checkpoint}: layout {report.layout}, sha256 "
                     f"{report.weights_sha256[:12]}")

    def __call__(self, batch: dict) -> dict:
        try:
            return {"record": [json.dumps(self.encode_shard(json.loads(u))) for u in batch["unit"]]}
        finally:
            tempdirs.release()

    def encode_shard(self, unit: dict) -> dict:
        import numpy as np

        from compressors import token_store
        from compressors.hico import clip_rows

        stage = self.cfg.hico.stage
        tmp = tempdirs.mkdtemp(prefix="longvid-hico-")
        try:
            videos = shard_videos(sharded_videos.read_shard(self.cfg.out, unit["shard"], MANIFEST_COLUMNS), stage,
                                  self.cfg)
            paths = sharding.extract_videos(unit["shard_uri"], videos, tmp)

            def decode(v: dict):
                return frame_io.read_frames(paths[v["video_id"]], v["frame_indices"])

            rows, tokens = [], []
            with ThreadPoolExecutor(1) as pool:  # decode the next video while this one encodes
                pending = pool.submit(decode, videos[0]) if videos else None
                for i, v in enumerate(videos):
                    frames = pending.result()
                    pending = pool.submit(decode, videos[i + 1]) if i + 1 < len(videos) else None
                    encoded = self.encoder.encode(frames, v["resolution"])
                    rows += clip_rows(v["video_id"], stage, v["frame_indices"], v["timestamps_s"], v["fps"],
                                      encoded, self.encoder)
                    tokens.append(encoded.tokens)
                    os.unlink(paths[v["video_id"]])
            table = token_store.tokens_table(rows, np.concatenate(tokens))
            file_name = os.path.basename(unit["out_uri"])
            with storage.staged_output(unit["out_uri"]) as local:
                segments = token_store.write_tokens(local, table, self.cfg.hico.row_group_bytes)
            for s in segments:
                s["file"] = file_name
            report = self.encoder.report
            record = {"shard": unit["shard"], "file": file_name, "digest": unit["digest"], "clips": len(rows),
                      "random_init": report.random_init, "weights_sha256": report.weights_sha256,
                      "checkpoint_layout": report.layout, "segments": segments}
            storage.write_bytes(unit["record_uri"], json.dumps(record, indent=1).encode())
            return record
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


MANIFEST_COLUMNS = ["video_id", "extension", "reader_fps", "sampling"]


def shard_videos(rows: list[dict], stage: str, cfg: BuildConfig) -> list[dict]:
    """What encoding needs of a shard's manifest rows (and what its digest covers): the stage's sampled frames."""
    videos = []
    for v in rows:
        plan = next((p for p in v["sampling"] or [] if p["stage"] == stage), None)
        st = cfg.sampling.stages.get(stage)
        if plan is None or st is None or (plan["sample"], plan["min_frames"], plan["max_frames"],
                                          plan["resolution"]) != (st.sample, st.min_frames, st.max_frames,
                                                                  st.resolution):
            raise StageInputMissing(f"the manifest's {stage} sampling plan of video {v['video_id']} does not match "
                                    f"sampling.stages.{stage}: run the `shard` stage first")
        videos.append({"video_id": v["video_id"], "extension": v["extension"], "fps": v["reader_fps"],
                       "frame_indices": plan["frame_indices"], "timestamps_s": plan["timestamps_s"],
                       "resolution": plan["resolution"]})
    return videos


def unit_digest(cfg: BuildConfig, shard_sha256: str, videos: list[dict], weights: str) -> str:
    """A shard's tokens are current when their record holds this digest of the shard, its videos' sampled frames
    (`shard_videos`), the encoder weights (`weights_digest(cfg)`) and the settings that change tokens."""
    h = cfg.hico
    return settings_digest({"shard_sha256": shard_sha256, "weights": weights, "preset": h.encoder.preset,
                            "tokens_per_frame": h.tokens_per_frame, "merge_dtype": h.merge_dtype, "resize": h.resize,
                            "videos": videos})


def _units(ctx: StageContext, weights: str) -> Iterator[dict]:
    """Per group of consecutive shards, in shard order, what `plan_shards` found (committed counts, the units to
    encode) and, as `index_ref`, the reference of its index part. A unit names its shard, and the encoder reads the
    shard's rows itself, so the driver never holds every video's frame lists."""
    for planned, index_ref in sharded_videos.map_shard_groups(ctx, NAME, plan_shards, (ctx, weights), payload=True):
        if planned["missing"]:
            raise StageInputMissing(planned["missing"])
        yield {**planned, "index_ref": index_ref}


def plan_shards(group: list, ctx: StageContext, weights: str) -> tuple[dict, object]:
    """One Ray task: the committed check of each shard of `group` (consecutive Shards; their rows read here).
    Returns the committed records' shard and clip counts and random_init, the units to encode (and, when there are
    some, the group's shard names), and, as a second object, the group's index part when every shard is committed
    (else None: it is read from the records once they are written)."""
    from compressors import token_store

    configure_worker(ctx.cfg)
    h = ctx.cfg.hico
    index, todo = [], []
    shards = clips = 0
    random_init = False
    rows_of = sharded_videos.read_shards(ctx.out, [shard.name for shard in group], MANIFEST_COLUMNS)
    for shard, rows in zip(group, rows_of):
        try:
            videos = shard_videos(rows, h.stage, ctx.cfg)
        except StageInputMissing as e:
            return {"missing": str(e)}, None
        digest = unit_digest(ctx.cfg, shard.sha256, videos, weights)
        record_uri = ctx.uri(layout.hico_record_path(h.stage, shard.name))
        out_uri = ctx.uri(layout.hico_part_path(h.stage, shard.name))
        record = committed_record(record_uri, digest, [out_uri])
        if record is not None:
            index.append(token_store.index_table(record["segments"]))
            shards += 1
            clips += record["clips"]
            random_init = random_init or bool(record["random_init"])
            continue
        todo.append({"shard": shard.name, "shard_uri": shard.uri, "out_uri": out_uri, "record_uri": record_uri,
                     "digest": digest})
    planned = {"missing": None, "shards": shards, "clips": clips, "random_init": random_init, "todo": todo,
               "names": [shard.name for shard in group] if todo else None}
    return planned, (None if todo else _concat_index(index))


def _concat_index(parts: list):
    from compressors import token_store

    return pa.concat_tables([token_store.index_table([]), *parts])


def index_part(unit, ctx: StageContext):
    """One Ray task: the index rows of a group of shards: its index part from planning (`unit` is then that table,
    resolved by Ray), or, for a group that had shards to encode, read from its shards' records (names in `unit`)."""
    if isinstance(unit, pa.Table):
        return unit
    from compressors import token_store

    configure_worker(ctx.cfg)
    stage = ctx.cfg.hico.stage
    return _concat_index([token_store.index_table(json.loads(storage.read_bytes(
        ctx.uri(layout.hico_record_path(stage, name))))["segments"]) for name in unit])


class _Totals:
    """What the stage reports: shards and clips encoded, and whether any came from a random-weight encoder."""

    def __init__(self):
        self.shards = self.clips = 0
        self.random_init = False

    def add(self, shards: int, clips: int, random_init: bool) -> None:
        self.shards += shards
        self.clips += clips
        self.random_init = self.random_init or bool(random_init)


def run(ctx: StageContext) -> dict:
    import ray

    from compressors import token_store

    cfg = ctx.cfg
    totals, todo, index_units = _Totals(), [], []
    for planned in _units(ctx, weights_digest(cfg)):
        totals.add(planned["shards"], planned["clips"], planned["random_init"])
        todo += planned["todo"]
        index_units.append(planned["names"] or planned["index_ref"])  # per group: its names or its index part
    if totals.shards:
        log.info(f"[hico] {totals.shards} shards already encoded, {len(todo)} to go")
    if todo:
        gpus, device = resolve_device(cfg)
        if cfg.hico.encoder.allow_random_init and not cfg.hico.encoder.checkpoint:
            log.warning("[hico] RANDOM-WEIGHT encoder (allow_random_init) — tokens are for tests and demos only")
        log.info(f"[hico] {len(todo)} shards on {cfg.hico.pool_size} encoder actor(s), device {device}")
        ds = ray.data.from_items([{"unit": json.dumps(u)} for u in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(HicoShardEncoder, fn_constructor_kwargs={"cfg": cfg, "device": device}, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=cfg.hico.pool_size), num_gpus=gpus,
                            num_cpus=1)
        for row in ds.iter_rows():
            record = json.loads(row["record"])
            totals.add(1, record["clips"], record["random_init"])
    # The index is written as its parts arrive in shard order (shards hold consecutive video_id ranges, so this is
    # the index's order), a row group at a time: the driver holds a group's rows, not the build's.
    with storage.local_output_if_changed(ctx.uri(layout.hico_index_path(cfg.hico.stage))) as path, \
            token_store.IndexWriter(path) as writer:
        for part in ray_runtime.imap_units(NAME, index_part, index_units, (ctx,), "shard groups indexed",
                                           total_items=len(index_units)):
            writer.write(part)
    # Writing a row group (up to INDEX_ROW_GROUP_ROWS rows: a copy and its encoding) leaves Arrow's allocator holding
    # the freed pages, ~0.6 KiB a row, under the rest of the stage (benchmarks/driver_attribution.py): hand them back.
    pa.default_memory_pool().release_unused()
    planned = sharded_videos.shard_names(ctx)
    orphans.report(NAME, orphans.remove_unplanned(ctx, layout.hico_dir(cfg.hico.stage), ".parquet", planned)
                   + orphans.remove_unplanned(ctx, layout.hico_records_dir(cfg.hico.stage), ".json", planned))
    return {"shards": totals.shards, "clips": totals.clips, "random_init": totals.random_init}
