"""The media the mixtures point at, materialised once per shard: video files (`mixtures/videos/<id>.<ext>`, the
data_root of `decord` stages) and frame directories of `img` stages (JPEGs at the stage's sampled frames).

One Ray task per shard that has work; its record in `work/mix/` (a digest of the shard and of what was asked of it)
lets a rerun skip it, so an unchanged rerun reads no shard and writes no byte."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field

from pipeline.core import tempdirs
from pipeline.core.committed import committed_record
from pipeline.core.context import StageContext, configure_worker
from pipeline.core.parts import settings_digest
from pipeline.ingest import sharding
from pipeline.io import frames as frame_io
from pipeline.io import storage
from pipeline.mix.records import FrameDir
from pipeline.mix.select import VideoInfo
from schemas import layout


@dataclass
class PayloadUnit:
    shard: str
    shard_uri: str
    shard_sha256: str
    videos: list[dict] = field(default_factory=list)  # {video_id, extension} of every video it extracts
    copy_videos: list[str] = field(default_factory=list)  # video ids to materialise as files
    frame_dirs: list[FrameDir] = field(default_factory=list)
    prefix: str = "frame"
    jpeg_quality: int = 90

    def files(self) -> list[str]:
        ext = {v["video_id"]: v["extension"] for v in self.videos}
        out = [layout.mix_video_path(vid, ext[vid]) for vid in self.copy_videos]
        for d in self.frame_dirs:
            out += d.files(self.prefix)
        return sorted(out)

    def digest(self) -> str:
        doc = {"shard": self.shard_sha256, "videos": self.copy_videos, "prefix": self.prefix,
               "jpeg_quality": self.jpeg_quality,
               "frames": [[d.stage, d.name, d.video_id, list(d.frame_indices)] for d in self.frame_dirs]}
        return settings_digest(doc)


def plan_units(ctx: StageContext, videos: dict[str, VideoInfo], copy_videos: set[str], frame_dirs: list[FrameDir],
               shards: dict[str, tuple[str, str]], existing: set[str] | None) -> tuple[list[PayloadUnit], int]:
    """(units to run, units already committed). `shards`: name -> (URI, sha256) of every committed shard.
    A unit is committed when its record matches and its files exist (in `existing`, or asked of storage when
    None)."""
    mx = ctx.cfg.mix
    units: dict[str, PayloadUnit] = {}

    def unit(video_id: str) -> PayloadUnit:
        shard = videos[video_id].shard
        if shard not in units:
            uri, sha256 = shards[shard]
            units[shard] = PayloadUnit(shard, uri, sha256, prefix=mx.frame_prefix, jpeg_quality=mx.jpeg_quality)
        return units[shard]

    for vid in sorted(copy_videos):
        unit(vid).copy_videos.append(vid)
    for d in sorted(frame_dirs, key=lambda d: (d.stage, d.name)):
        unit(d.video_id).frame_dirs.append(d)

    def exists(rel: str) -> bool:
        return rel in existing if existing is not None else storage.exists(ctx.uri(rel))

    todo, done = [], 0
    for shard in sorted(units):
        u = units[shard]
        wanted = set(u.copy_videos) | {d.video_id for d in u.frame_dirs}
        u.videos = [{"video_id": v, "extension": videos[v].extension} for v in sorted(wanted)]
        record_uri = ctx.uri(layout.mix_record_path(shard))
        if committed_record(record_uri, u.digest(), u.files(), exists=exists) is not None:
            done += 1
            continue
        todo.append(u)
    return todo, done


def write_unit(unit: PayloadUnit, ctx: StageContext) -> dict:
    """One Ray task: extract the shard's wanted videos, copy them out and encode the frame directories."""
    configure_worker(ctx.cfg)
    tmp = tempdirs.mkdtemp(prefix="longvid-mix-")
    try:
        paths = sharding.extract_videos(unit.shard_uri, unit.videos, tmp)
        ext = {v["video_id"]: v["extension"] for v in unit.videos}
        for vid in unit.copy_videos:
            _copy_video(paths[vid], ctx.uri(layout.mix_video_path(vid, ext[vid])))
        by_video: dict[str, list[FrameDir]] = {}
        for d in unit.frame_dirs:
            by_video.setdefault(d.video_id, []).append(d)
        for vid, dirs in by_video.items():
            _write_frames(paths[vid], dirs, unit, ctx)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record = {"shard": unit.shard, "digest": unit.digest(), "files": unit.files()}
    storage.write_bytes(ctx.uri(layout.mix_record_path(unit.shard)), json.dumps(record, indent=1).encode())
    return record


def _copy_video(path: str, uri: str) -> None:
    # The name is the content hash's prefix: a file of the same size there already holds these bytes.
    if storage.exists(uri) and storage.size(uri) == os.path.getsize(path):
        return
    with storage.staged_output(uri) as staged:
        shutil.copyfile(path, staged)


def _write_frames(path: str, dirs: list[FrameDir], unit: PayloadUnit, ctx: StageContext) -> None:
    wanted = sorted({i for d in dirs for i in d.frame_indices})
    decoded = dict(zip(wanted, frame_io.read_frames(path, wanted)))
    for d in dirs:
        for i, rel in zip(d.frame_indices, d.files(unit.prefix)):
            storage.write_bytes_if_changed(ctx.uri(rel), frame_io.encode_jpeg(decoded[i], unit.jpeg_quality))
