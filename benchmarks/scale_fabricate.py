"""The committed outputs of a LongVid-shaped build, fabricated without real media for `scale.py`: the crawl list,
probe and scene parts, shards (each video a tiny placeholder of the same few bytes), shard records, and the
annotate stage's four tables plus its shard records (and, when asked, the hico stage's records, index and
placeholder token files), written with the project's own schemas, layout and writers so
the stages that follow (shard, annotate, mix, stats, report) find every unit committed and do only their driver-side
assembly and per-row work.

Shape (scaled by the fraction): 114,228 videos, durations log-normal with median 4 min and mean ~7.4 min (seconds
to 90 min), scenes of 6-22 s (about 31 caption windows per video), 3.44M QA in the five families (open and
multiple-choice), a clip caption per window plus a summary, a grounding label per third window, 0.5 % probe
rejects and 0.2 % duplicates. Everything derives from a seed."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np
import pyarrow as pa

from annotators.windows import caption_windows
from compressors import token_store
from pipeline.core.context import StageContext
from pipeline.ingest import manifest, sharding
from pipeline.ingest.video_record import video_id_of
from pipeline.io import storage
from pipeline.stages import annotate as annotate_stage
from pipeline.stages import hico as hico_stage
from schemas import hashing, layout, reasons, sampling, tables

LONGVID_VIDEOS = 114_228
LONGVID_QA = 3_440_000
MEDIAN_S, SIGMA = 240.0, 1.11  # log-normal: mean = median * exp(sigma^2 / 2) ~ 444 s
MIN_S, MAX_S = 3.0, 5400.0
BITRATE_BPS = 1_000_000
QA_PER_VIDEO = LONGVID_QA / LONGVID_VIDEOS  # ~30.1
REJECT_SHARE, DUPLICATE_SHARE = 0.005, 0.002
PLACEHOLDER = b"LONGVID-SCALE-PLACEHOLDER\n"  # the bytes of every video in the fabricated shards

WORDS = ("the a person man woman child dog car street kitchen table walks runs opens picks up puts down holds looks "
         "turns around camera moves slowly quickly towards away from near behind inside outside red blue green "
         "small large bright dark room building tree water window door bag cup phone screen book").split()


def _text(rng: np.random.Generator, lo: int, hi: int) -> str:
    """A sentence of lo..hi characters from a small vocabulary."""
    target = int(rng.integers(lo, hi + 1))
    words = rng.choice(WORDS, size=target // 4 + 2)
    return " ".join(words)[:target].strip().capitalize() + "."


def videos_for(fraction: float) -> int:
    return max(2, round(LONGVID_VIDEOS * fraction))


def probe_rows(n: int, seed: int) -> list[dict]:
    """Probe part rows of n inputs (ok ones, rejects, duplicates), sorted by source_uri."""
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.lognormal(np.log(MEDIAN_S), SIGMA, n), MIN_S, MAX_S)
    rows = []
    for i in range(n):
        uri = f"/scale/src/video-{i:07d}.mp4"
        base = {"source_uri": uri, "source": "/scale/src", "source_metadata": None}
        u = rng.random()
        if u < REJECT_SHARE:
            rows.append({**base, "ok": False, "reason": reasons.UNREADABLE, "message": "fabricated reject"})
            continue
        sha = hashlib.sha256(f"scale-{seed}-{i}".encode()).hexdigest()
        if u < REJECT_SHARE + DUPLICATE_SHARE and i > 0 and rows[-1]["ok"]:
            sha = rows[-1]["sha256"]  # the same bytes as the input before it
        fps = 30.0 if i % 3 else 25.0
        vlen = max(2, int(durations[i] * fps))
        dur = vlen / fps
        rows.append({**base, "ok": True, "reason": None, "message": None, "sha256": sha, "video_id": video_id_of(sha),
                     "bytes": int(dur * BITRATE_BPS / 8), "extension": "mp4", "container": "mov,mp4,m4a,3gp,3g2,mj2",
                     "codec": "h264", "width": 640, "height": 360, "rotation": 0, "fps": fps, "num_frames": vlen,
                     "duration_s": dur, "has_audio": True, "bitrate": BITRATE_BPS, "reader": "decord",
                     "reader_num_frames": vlen, "reader_fps": fps})
    return rows


def scenes_of(duration_s: float, rng: np.random.Generator) -> list[dict]:
    edges = [0.0]
    while edges[-1] < duration_s:
        edges.append(min(duration_s, edges[-1] + float(rng.uniform(6.0, 22.0))))
    return [{"start_s": a, "end_s": b} for a, b in zip(edges[:-1], edges[1:])]


def _accepted(rows: list[dict]) -> list[dict]:
    """The probed rows the manifest keeps (the first of each content hash in source_uri order), by video_id."""
    kept: dict[str, dict] = {}
    for r in rows:
        if r["ok"] and r["sha256"] not in kept:
            kept[r["sha256"]] = r
    return sorted(kept.values(), key=lambda r: r["video_id"])


def _shard_batches(ctx: StageContext, accepted: list[dict], scenes: dict[str, list[dict]]):
    """(shard index, its manifest rows) of the accepted videos, cut as the shard stage cuts them."""
    cfg = ctx.cfg
    sh = cfg.shard
    stages = cfg.sampling.stages
    batch: list[dict] = []
    est = 0
    index = 0
    for row in accepted + [None]:
        video = None
        if row is not None:
            video = {name: row.get(name) for name in tables.VIDEOS.names}
            video["scenes"] = scenes.pop(row["video_id"])
            video["sampling"] = sampling.plan(row["reader_num_frames"], row["reader_fps"], stages,
                                              cfg.sampling.clip_len)
            video["shard"] = None
            size = sharding.estimated_bytes(video, sh.payload, sh.frames_stage)
        if batch and (video is None or est + size > sh.target_bytes or len(batch) >= sh.max_samples):
            yield index, batch
            index += 1
            batch, est = [], 0
        if video is not None:
            batch.append(video)
            est += size


def fabricate(ctx: StageContext, fraction: float, seed: int = 0, log=print, hico: bool = False) -> dict:
    """Write every committed unit of a build of `fraction` × LongVid under ctx.out; returns its counts. With `hico`,
    the hico stage's committed outputs too (`fabricate_hico`)."""
    n = videos_for(fraction)
    rows = probe_rows(n, seed)
    storage.write_parquet(ctx.uri(layout.MANIFEST_CRAWL), tables.to_table(
        [{"source_uri": r["source_uri"], "source": r["source"], "source_metadata": None, "size_hint": r.get("bytes")}
         for r in rows], tables.CRAWL))
    by_uri = {r["source_uri"]: r for r in rows}
    for part in manifest.probe_parts(ctx, rows):
        storage.write_parquet(manifest.part_uri(ctx, layout.PROBE_PARTS_DIR, part),
                              tables.to_table([by_uri[k] for k in part.keys], tables.PROBE_PART))
    del by_uri

    accepted = _accepted(rows)
    del rows
    rng = np.random.default_rng(seed + 1)
    scenes = {r["video_id"]: scenes_of(r["duration_s"], rng) for r in accepted}
    for part in manifest.scenes_parts(ctx, list(scenes)):
        storage.write_parquet(manifest.part_uri(ctx, layout.SCENES_PARTS_DIR, part), tables.to_table(
            [{"video_id": v, "ok": True, "reason": None, "message": None, "scenes": scenes[v]} for v in part.keys],
            tables.SCENES_PART))
    log(f"[fabricate] {n} inputs, {len(accepted)} accepted videos, probe and scene parts written")

    counts = {"inputs": n, "videos": len(accepted), "shards": 0, "captions": 0, "qa": 0, "grounding": 0}
    settings = manifest.payload_settings(ctx)
    tokens = HicoOutputs(ctx) if hico else None
    with tempfile.TemporaryDirectory(prefix="longvid-scale-") as tmp:
        placeholder = os.path.join(tmp, "placeholder.mp4")
        with open(placeholder, "wb") as f:
            f.write(PLACEHOLDER)
        for index, batch in _shard_batches(ctx, accepted, scenes):
            shard_sha256 = _write_shard(ctx, index, batch, settings, placeholder, tmp, counts, rng)
            if tokens is not None:
                tokens.add(index, shard_sha256, batch)
            counts["shards"] = index + 1
    if tokens is not None:
        tokens.close(log)
    log(f"[fabricate] {counts['shards']} shards, {counts['captions']} captions, {counts['qa']} QA, "
        f"{counts['grounding']} grounding labels")
    return counts


def fabricate_hico(ctx: StageContext, fraction: float, seed: int = 0, log=print) -> None:
    """The hico stage's committed outputs for a build `fabricate` wrote with the same fraction and seed (its shards
    are recomputed, their sha256 read from the shard records): a placeholder token file, a record and index rows
    per shard, so the hico stage finds every shard committed and does only its planning."""
    accepted = _accepted(probe_rows(videos_for(fraction), seed))
    rng = np.random.default_rng(seed + 1)
    scenes = {r["video_id"]: scenes_of(r["duration_s"], rng) for r in accepted}
    tokens = HicoOutputs(ctx)
    for index, batch in _shard_batches(ctx, accepted, scenes):
        record = json.loads(storage.read_bytes(ctx.uri(layout.shard_record_path(index))))
        tokens.add(index, record["sha256"], batch)
    tokens.close(log)


class HicoOutputs:
    """Writes the hico stage's committed outputs shard by shard: a placeholder token file (the committed check only
    asks that it exists), a record whose digest is the one the stage computes (`hico.unit_digest`) and whose
    segments give each video its clips (one row group per shard), and at the end the index of every segment."""

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.stage = ctx.cfg.hico.stage
        self.weights = hico_stage.weights_digest(ctx.cfg)
        self.index: list[pa.Table] = []
        self.clips = 0

    def add(self, index: int, shard_sha256: str, videos: list[dict]) -> None:
        cfg, name = self.ctx.cfg, layout.shard_name(index)
        # the digest covers the rows as the stage reads them back from manifest/videos.parquet
        rows = tables.to_table(videos, tables.VIDEOS).select(hico_stage.MANIFEST_COLUMNS).to_pylist()
        units = hico_stage.shard_videos(rows, self.stage, cfg)
        segments, offset = [], 0
        file_name = os.path.basename(layout.hico_part_path(self.stage, name))
        for v in units:
            clips = max(1, -(-len(v["frame_indices"]) // cfg.sampling.clip_len))
            segments.append({"video_id": v["video_id"], "file": file_name, "row_group": 0, "row_offset": offset,
                             "num_rows": clips})
            offset += clips
        storage.write_bytes(self.ctx.uri(layout.hico_part_path(self.stage, name)), PLACEHOLDER)
        record = {"shard": name, "file": file_name,
                  "digest": hico_stage.unit_digest(cfg, shard_sha256, units, self.weights), "clips": offset,
                  "random_init": True, "weights_sha256": None, "checkpoint_layout": None, "segments": segments}
        storage.write_bytes(self.ctx.uri(layout.hico_record_path(self.stage, name)),
                            json.dumps(record, indent=1).encode())
        self.index.append(token_store.index_table(segments))
        self.clips += offset

    def close(self, log) -> None:
        storage.write_bytes(self.ctx.uri(layout.hico_index_path(self.stage)), token_store.index_bytes_of(self.index))
        log(f"[fabricate] hico outputs of {len(self.index)} shards, {self.clips} clips")


def _write_shard(ctx: StageContext, index: int, videos: list[dict], settings: dict, placeholder: str, tmp: str,
                 counts: dict, rng: np.random.Generator) -> str:
    """The shard, its record and its annotation tables and record; returns the shard's sha256."""
    name = layout.shard_name(index)
    digest = sharding.content_digest([manifest.sample_metadata(v) for v in videos], settings)
    local_tar = os.path.join(tmp, name)
    writer = sharding.SampleWriter(local_tar)
    for v in videos:
        writer.add_sample(v["video_id"], v["extension"], placeholder, manifest.sample_metadata(v))
    writer.close()
    record = {"shard": name, "nsamples": writer.count, "filesize": os.path.getsize(local_tar),
              "sha256": hashing.file_sha256(local_tar), "video_ids": [v["video_id"] for v in videos],
              "content_digest": digest}
    with storage.staged_output(ctx.uri(layout.shard_path(index))) as staged:
        os.replace(local_tar, staged)
    storage.write_bytes(ctx.uri(layout.shard_record_path(index)), json.dumps(record, indent=1).encode())

    tables_ = annotation_tables(videos, ctx, rng)
    for table, t in tables_.items():
        storage.write_parquet(ctx.uri(layout.annotation_path(table, name)), t)
    unit_videos = annotate_stage.unit_videos(videos)
    ann_record = {"shard": name, "digest": annotate_stage.unit_digest(ctx, record["sha256"], unit_videos, None,
                                                                annotate_stage.model_digest(ctx.cfg)),
                  "counts": {t: tables_[t].num_rows for t in annotate_stage.TABLE_SCHEMAS}, "random_init": False}
    storage.write_bytes(ctx.uri(layout.annotation_record_path(name)), json.dumps(ann_record, indent=1).encode())
    for t in ("captions", "qa", "grounding"):
        counts[t] += tables_[t].num_rows
    return record["sha256"]


PROVENANCE = {"backend": "transformers", "model": "scale-fabricated", "weights_sha256": "0" * 64,
              "random_init": False, "prompt_id": "scale", "prompt_version": 1,
              "generation_params": json.dumps({"max_new_tokens": 160}), "num_frames": 8, "frames_stage": "stage2"}


def _columns(rows: list[dict], schema: pa.Schema) -> pa.Table:
    filled = [{**PROVENANCE, **r} for r in rows]
    return tables.to_table(filled, schema)


def annotation_tables(videos: list[dict], ctx: StageContext, rng: np.random.Generator) -> dict[str, pa.Table]:
    a = ctx.cfg.annotate
    captions, qa, grounding = [], [], []
    for v in videos:
        vid, dur = v["video_id"], v["duration_s"]
        windows = caption_windows(v["scenes"], dur, a.min_window_s, a.max_window_s)
        for k, w in enumerate(windows):
            captions.append({"video_id": vid, "level": "clip", "start_s": w.start_s, "end_s": w.end_s,
                             "text": _text(rng, 120, 420)})
            if k % 3 == 0:
                grounding.append({"video_id": vid, "query": _text(rng, 30, 90), "start_s": w.start_s,
                                  "end_s": w.end_s, "duration_s": dur, "origin": "caption"})
        captions.append({"video_id": vid, "level": "video", "start_s": 0.0, "end_s": dur,
                         "text": _text(rng, 400, 1200)})
        n_qa = int(QA_PER_VIDEO) + (1 if rng.random() < QA_PER_VIDEO % 1 else 0)
        for q in range(n_qa):
            family = tables.QA_FAMILIES[q % len(tables.QA_FAMILIES)]
            form = tables.QA_FORMS[(q // len(tables.QA_FAMILIES)) % 2]
            w = windows[q % len(windows)]
            options = [_text(rng, 15, 45) for _ in range(4)] if form == "mc" else []
            answer = options[int(rng.integers(4))] if options else _text(rng, 20, 120)
            timed = family in ("temporal_grounding", "event_understanding")
            qa.append({"video_id": vid, "family": family, "form": form, "question": _text(rng, 40, 140) + "?",
                       "options": options, "answer": answer, "start_s": w.start_s if timed else None,
                       "end_s": w.end_s if timed else None, "generator": "template"})
    return {"captions": _columns(captions, tables.CAPTIONS), "qa": _columns(qa, tables.QA),
            "grounding": _columns(grounding, tables.GROUNDING),
            "rejects": tables.empty(tables.ANNOTATION_REJECTS)}
