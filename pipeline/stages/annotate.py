"""annotate: captions, QA and grounding labels for every sharded video with a video MLLM backend.

Per shard: a CPU task extracts the videos and decodes each caption window's frames (and picks the window's
precomputed HiCo clips when they exist), then an annotator actor (Ray Data ActorPoolStrategy, `num_gpus` per
actor, model loaded once) generates, validates and commits `annotations/{captions,qa,grounding,rejects}/<shard>`.
Decoding upstream of the actors keeps the model from waiting on it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import shutil

from pipeline.core import orphans, ray_runtime, tempdirs
from pipeline.core.committed import committed_record
from pipeline.core.context import StageContext, configure_worker
from pipeline.core.parts import settings_digest
from pipeline.ingest import sharded_videos, sharding
from pipeline.io import frames as frame_io
from pipeline.io import storage
from schemas import layout, tables
from schemas.config import BuildConfig

log = logging.getLogger(__name__)

NAME = "annotate"
DESCRIPTION = "timestamped captions, five QA families and grounding labels with a video MLLM"

TABLE_SCHEMAS = {"captions": tables.CAPTIONS, "qa": tables.QA, "grounding": tables.GROUNDING,
                 "rejects": tables.ANNOTATION_REJECTS}


TINY_SEED = 0


def tiny_model_name(backend: str) -> str:
    """The fixed identity of the built-in demo model (its `model` column; the weights hash goes alongside)."""
    return f"longvid-tiny-{backend}-seed{TINY_SEED}"


def model_digest(cfg: BuildConfig) -> str:
    """What resume keys annotations on: the checkpoint's weights content hash (cached per machine), so fine-tuned
    weights with the same file names and shapes are annotated again."""
    a = cfg.annotate
    if a.tiny_demo_model:
        return tiny_model_name(a.backend)
    from compressors.weights_hash import directory_sha256  # imports torch (the compressors package): only when needed

    return directory_sha256(a.checkpoint)


def decode_unit(batch: dict, cfg: BuildConfig) -> dict:
    """CPU step: the annotator inputs (windows, frames, HiCo clips) of one shard, pickled for the actor."""
    from annotators.video_annotator import VideoInput
    from annotators.windows import caption_windows, window_frames

    configure_worker(cfg)
    a = cfg.annotate
    n_frames = cfg.sampling.stages[a.frames_stage].max_frames
    out = []
    for raw in batch["unit"]:
        unit = json.loads(raw)
        reader = _hico_reader(cfg, unit)
        tmp = tempdirs.mkdtemp(prefix="longvid-annotate-")
        try:
            videos = unit_videos(sharded_videos.read_shard(cfg.out, unit["shard"], MANIFEST_COLUMNS))
            paths = sharding.extract_videos(unit["shard_uri"], videos, tmp)
            inputs = []
            for v in videos:
                windows = caption_windows(v["scenes"] or [], v["duration_s"], a.min_window_s, a.max_window_s)
                indices = [window_frames(w, v["vlen"], v["fps"], n_frames) for w in windows]
                decoded = frame_io.read_frames(paths[v["video_id"]], [i for idx in indices for i in idx])
                frames = [decoded[k * n_frames:(k + 1) * n_frames] for k in range(len(windows))]
                stamps = [[i / v["fps"] for i in idx] for idx in indices]
                tokens = _window_tokens(reader, v["video_id"], windows)
                inputs.append(VideoInput(v["video_id"], v["duration_s"], v["scenes"] or [], windows, frames, stamps,
                                         tokens))
                os.unlink(paths[v["video_id"]])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out.append(pickle.dumps((unit, inputs)))
    return {"payload": out}


def _hico_reader(cfg: BuildConfig, unit: dict):
    if cfg.annotate.backend != "hico_mllm" or not unit.get("hico_uri"):
        return None
    from compressors.token_store import HicoReader

    return HicoReader(unit["hico_uri"], cfg.storage.s3_endpoint_url)


def _window_tokens(reader, video_id: str, windows) -> list:
    """The precomputed clips overlapping each window (None when there are no tokens for this video)."""
    if reader is None or video_id not in reader.segments:
        return [None] * len(windows)
    vt = reader.read(video_id)
    picked = []
    for w in windows:
        mask = (vt.t_end_s > w.start_s) & (vt.t_start_s < w.end_s)
        picked.append(vt.tokens[mask] if mask.any() else None)
    return picked


class Annotator:
    """Ray Data actor: loads the backend once, annotates one shard per call, commits its four tables."""

    def __init__(self, cfg: BuildConfig, device: str):
        from annotators.backends.base import GenerationParams
        from annotators.video_annotator import AnnotateSettings, VideoAnnotator
        from compressors.dtypes import dtype_name

        configure_worker(cfg)
        a = cfg.annotate
        self.cfg = cfg
        dtype = dtype_name(a.dtype, device)
        params = GenerationParams(max_new_tokens=a.max_new_tokens, do_sample=a.do_sample)
        if a.backend == "hico_mllm":
            from annotators.backends.hico_mllm import HicoMllmBackend as backend_cls
        else:
            from annotators.backends.transformers_backend import TransformersBackend as backend_cls
        if a.tiny_demo_model:
            # Built in a temporary folder that is gone once the model is in memory; rows name it by a fixed name
            # plus its weights hash, so two builds write the same bytes.
            tmp = tempdirs.mkdtemp(prefix="longvid-tiny-model-")
            try:
                backend = backend_cls(_build_tiny(a.backend, tmp), device=device, dtype=dtype,
                                      batch_size=a.batch_size, params=params)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            backend.info = dataclasses.replace(backend.info, model=tiny_model_name(a.backend))
        else:
            backend = backend_cls(a.checkpoint, device=device, dtype=dtype, batch_size=a.batch_size, params=params)
        settings = AnnotateSettings(caption_min_chars=a.caption_min_chars, caption_max_chars=a.caption_max_chars,
                                    qa_generators=dict(a.qa_generators), qa_forms=tuple(a.qa_forms),
                                    repair_attempts=a.repair_attempts, frames_stage=a.frames_stage)
        self.annotator = VideoAnnotator(backend, settings)

    def __call__(self, batch: dict) -> dict:
        records = []
        for payload in batch["payload"]:
            unit, inputs = pickle.loads(payload)
            rows = self.annotator.annotate(inputs)
            if unit.get("hico_random_init"):  # the model saw tokens of a random-weight encoder: say so on every row
                for table_rows in rows.values():
                    for row in table_rows:
                        row["random_init"] = True
            for table, schema in TABLE_SCHEMAS.items():
                storage.write_parquet(unit["out_uris"][table], tables.to_table(rows[table], schema))
            record = {"shard": unit["shard"], "digest": unit["digest"],
                      "counts": {t: len(rows[t]) for t in TABLE_SCHEMAS},
                      "random_init": self.annotator.backend.info.random_init or bool(unit.get("hico_random_init"))}
            storage.write_bytes(unit["record_uri"], json.dumps(record, indent=1).encode())
            records.append(json.dumps(record))
        tempdirs.release()
        return {"record": records}


def _build_tiny(backend: str, directory: str) -> str:
    if backend == "hico_mllm":
        from annotators.tiny_hico_mllm import build_tiny_checkpoint
    else:
        from annotators.tiny_transformers_vlm import build_tiny_checkpoint
    return build_tiny_checkpoint(directory, seed=TINY_SEED) or directory


MANIFEST_COLUMNS = ["video_id", "extension", "duration_s", "scenes", "reader_num_frames", "reader_fps"]


def unit_videos(videos: list[dict]) -> list[dict]:
    """What the annotate stage needs of a shard's manifest rows (and what its digest covers)."""
    return [{"video_id": v["video_id"], "extension": v["extension"], "duration_s": v["duration_s"],
             "scenes": v["scenes"], "vlen": v["reader_num_frames"], "fps": v["reader_fps"]} for v in videos]


def unit_digest(ctx: StageContext, shard_sha256: str, videos: list[dict], hico_digest: str | None,
                model: str) -> str:
    """A shard's annotations are current when their record holds this digest of the shard, settings and model
    (`model_digest(cfg)`, computed once per run)."""
    a = ctx.cfg.annotate
    settings = {k: v for k, v in vars(a).items() if k not in ("device", "pool_size", "num_gpus", "batch_size")}
    return settings_digest({"shard": shard_sha256, "settings": settings, "model": model, "hico": hico_digest,
                            "videos": videos})


def _units(ctx: StageContext) -> tuple["_Annotated", list[dict]]:
    """What is annotated already (per shard, its grounding count) and the units to annotate, in shard order. Ray
    tasks plan groups of consecutive shards (`plan_shards`: their rows, the hico record, the digest, the committed
    check); the driver reads only the manifest's shard column and keeps per shard a name and a count; the units name
    only their shard (the decode task reads the shard's rows itself)."""
    cfg = ctx.cfg
    a = cfg.annotate
    has_hico = a.backend == "hico_mllm" and storage.exists(ctx.uri(layout.hico_index_path(cfg.hico.stage)))
    done, todo = _Annotated(), []
    for planned in sharded_videos.map_shard_groups(ctx, NAME, plan_shards, (ctx, model_digest(cfg), has_hico)):
        done.add_committed(planned["committed"])
        todo += planned["todo"]
    return done, todo


class _Annotated:
    """The annotated shards' grounding counts (the QVHighlights export's qids follow them) and the stage's totals."""

    def __init__(self):
        self.grounding: dict[str, int] = {}
        self.counts = {t: 0 for t in TABLE_SCHEMAS}
        self.random_init = False

    def add_record(self, record: dict) -> None:
        self.grounding[record["shard"]] = record["counts"]["grounding"]
        for t in TABLE_SCHEMAS:
            self.counts[t] += record["counts"][t]
        self.random_init = self.random_init or bool(record["random_init"])

    def add_committed(self, committed: dict) -> None:
        """A `plan_shards` result's committed shards."""
        self.grounding.update(zip(committed["shards"], committed["grounding"]))
        for t in TABLE_SCHEMAS:
            self.counts[t] += committed["counts"][t]
        self.random_init = self.random_init or committed["random_init"]


def plan_shards(group: list, ctx: StageContext, model: str, has_hico: bool) -> dict:
    """One Ray task: the unit to annotate of each shard of `group` (consecutive Shards; their rows read here) whose
    annotations are not committed; of the committed ones, their names, grounding counts, count totals and
    random_init."""
    configure_worker(ctx.cfg)
    cfg = ctx.cfg
    hico_stage_uri = ctx.uri(layout.hico_dir(cfg.hico.stage))
    committed = {"shards": [], "grounding": [], "counts": {t: 0 for t in TABLE_SCHEMAS}, "random_init": False}
    todo = []
    rows_of = sharded_videos.read_shards(ctx.out, [shard.name for shard in group], MANIFEST_COLUMNS)
    for shard, rows in zip(group, rows_of):
        name = shard.name
        hico_digest, hico_random = None, False
        if has_hico:
            rec = ctx.uri(layout.hico_record_path(cfg.hico.stage, name))
            if storage.exists(rec):
                hico_record = json.loads(storage.read_bytes(rec))
                hico_digest, hico_random = hico_record.get("digest"), bool(hico_record.get("random_init"))
        digest = unit_digest(ctx, shard.sha256, unit_videos(rows), hico_digest, model)
        out_uris = {t: ctx.uri(layout.annotation_path(t, name)) for t in TABLE_SCHEMAS}
        record_uri = ctx.uri(layout.annotation_record_path(name))
        record = committed_record(record_uri, digest, out_uris.values())
        if record is not None:
            committed["shards"].append(name)
            committed["grounding"].append(record["counts"]["grounding"])
            for t in TABLE_SCHEMAS:
                committed["counts"][t] += record["counts"][t]
            committed["random_init"] = committed["random_init"] or bool(record["random_init"])
            continue
        todo.append({"shard": name, "shard_uri": shard.uri, "digest": digest, "out_uris": out_uris,
                     "record_uri": record_uri, "hico_uri": hico_stage_uri if hico_digest else None,
                     "hico_random_init": hico_random and cfg.annotate.backend == "hico_mllm"})
    return {"committed": committed, "todo": todo}


QVH_COLUMNS = ["video_id", "query", "start_s", "end_s", "duration_s"]


def _write_qvhighlights(ctx: StageContext, grounding_rows: list[tuple[str, int]]) -> None:
    """The QVHighlights export: one JSONL, a running qid over the shards in order, rows sorted within each shard
    (shards hold consecutive video_id ranges, so this is sorted over the whole build). Ray tasks format groups of
    shards (`qvhighlights_lines`), each starting at the qid its earlier shards' grounding counts give; the driver
    copies each group's text from the file its task wrote, in order and a chunk at a time, into a local file committed
    when it changed. (Returned as Ray objects, the texts were read in place from the object store, whose pages stayed
    in the driver's RSS: 42 -> 52 MiB from 28k to 57k videos; returned as bytes, they were copied into its heap.)"""
    groups, qid = [], 0
    for start in range(0, len(grounding_rows), sharded_videos.SHARDS_PER_TASK):
        group = grounding_rows[start:start + sharded_videos.SHARDS_PER_TASK]
        groups.append((len(groups), qid, group))
        qid += sum(rows for _, rows in group)
    pieces = ctx.uri(layout.QVH_PIECES_DIR)
    storage.remove_folder(pieces)  # those of a killed run
    try:
        with storage.local_output_if_changed(ctx.uri(layout.GROUNDING_QVH)) as path, open(path, "wb") as f:
            written = ray_runtime.imap_units(NAME, qvhighlights_lines, groups, (ctx,), "shards exported",
                                             total_items=len(grounding_rows), items_of=lambda g: len(g[2]))
            with contextlib.closing(written):  # closed on a failed copy: no task writes after the cleanup
                for piece in written:
                    storage.copy_into(piece, f)
    finally:
        storage.remove_folder(pieces)


def qvhighlights_lines(group: tuple[int, int, list[tuple[str, int]]], ctx: StageContext) -> str:
    """One Ray task: the QVHighlights lines of some consecutive shards ((name, grounding rows) pairs), UTF-8, qids
    from `group[1]` on, written to the build's work folder as piece `group[0]`; returns its URI. A grounding table
    whose row count is not its record's is an error (the qids would shift)."""
    from annotators.grounding import qvhighlights_record

    configure_worker(ctx.cfg)
    index, qid, shards = group
    lines = []
    for name, expected in shards:
        rows = storage.read_parquet(ctx.uri(layout.annotation_path("grounding", name)), columns=QVH_COLUMNS).to_pylist()
        if len(rows) != expected:
            raise RuntimeError(f"annotations/grounding of {name} holds {len(rows)} rows, its annotation record "
                               f"{expected}: remove {layout.annotation_record_path(name)} and rerun `annotate`")
        rows.sort(key=lambda r: (r["video_id"], r["start_s"], r["query"]))
        for r in rows:
            lines.append(json.dumps(qvhighlights_record(qid, r, ctx.cfg.annotate.qvh_clip_s), ensure_ascii=False))
            qid += 1
    piece = ctx.uri(layout.qvh_piece_path(index))
    storage.write_bytes(piece, "".join(line + "\n" for line in lines).encode("utf-8"))
    return piece


def run(ctx: StageContext) -> dict:
    import ray

    from pipeline.stages.hico import resolve_gpus

    cfg = ctx.cfg
    done, todo = _units(ctx)
    if done.grounding:
        log.info(f"[annotate] {len(done.grounding)} shards already annotated, {len(todo)} to go")
    if todo:
        gpus, device = resolve_gpus(cfg.annotate.num_gpus)
        if cfg.annotate.device != "auto":
            device = cfg.annotate.device
        if cfg.annotate.tiny_demo_model:
            log.warning(f"[annotate] tiny RANDOM-WEIGHT {cfg.annotate.backend} model (tiny_demo_model) — "
                        "annotations are gibberish, for tests and demos only")
        log.info(f"[annotate] {len(todo)} shards, backend {cfg.annotate.backend} on {cfg.annotate.pool_size} "
                 f"actor(s), device {device}")
        ds = ray.data.from_items([{"unit": json.dumps(u)} for u in todo], override_num_blocks=len(todo))
        # A decode pool one larger than the actor pool keeps the actors fed, and its differing size stops Ray Data
        # from fusing decoding into the actors (it fuses a task map into an actor map of equal size), which would
        # leave each actor idle while it decodes its next shard.
        decoders = ray.data.TaskPoolStrategy(size=cfg.annotate.pool_size + 1)
        ds = ds.map_batches(tempdirs.released(decode_unit), fn_kwargs={"cfg": cfg}, batch_size=1, num_cpus=1, compute=decoders)
        ds = ds.map_batches(Annotator, fn_constructor_kwargs={"cfg": cfg, "device": device}, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=cfg.annotate.pool_size), num_gpus=gpus,
                            num_cpus=1)
        for row in ds.iter_rows():
            done.add_record(json.loads(row["record"]))
    planned = sharded_videos.shard_names(ctx)
    _write_qvhighlights(ctx, [(name, done.grounding[name]) for name in planned if name in done.grounding])
    removed = orphans.remove_unplanned(ctx, layout.ANNOTATION_RECORDS_DIR, ".json", planned)
    for table in TABLE_SCHEMAS:
        removed += orphans.remove_unplanned(ctx, layout.annotation_dir(table), ".parquet", planned)
    orphans.report(NAME, removed)
    return {"shards": len(done.grounding), **done.counts, "random_init": done.random_init}
