"""The videos a set is built from: a LongVid build (its manifest, shards and captions) or plain sources (local
paths, s3:// prefixes, manifests), bounded to a seeded pool, and made local on demand inside the task using them."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import Iterator

from pipeline.core import tempdirs
from pipeline.ingest import crawl, sharding
from pipeline.io import storage
from schemas import layout
from schemas.sample import VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoRef:
    key: str  # video_id of a build, else the source URI
    uri: str  # a plain file (local or s3://), or the shard tar holding the video
    label: str  # short readable name (captions made without annotations use it)
    extension: str = ""  # set for videos inside a shard
    duration_s: float | None = None


@dataclass
class Corpus:
    videos: list[VideoRef]
    captions: dict[str, list[dict]] = field(default_factory=dict)  # key -> caption rows (level, start_s, end_s, text)


def is_build(uri: str) -> bool:
    return storage.exists(storage.join(uri, layout.MANIFEST_VIDEOS))


def _label(uri: str) -> str:
    name = storage.path_part(uri).rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _from_build(root: str, pool_videos: int, seed: int) -> list[VideoRef]:
    """Sharded videos of a build; at most `pool_videos` (a seeded choice made on the Arrow table, so a manifest of
    100k+ videos never becomes Python objects)."""
    import pyarrow.compute as pc

    table = storage.read_parquet(storage.join(root, layout.MANIFEST_VIDEOS),
                                 ["video_id", "shard", "extension", "duration_s", "source_uri"])
    table = table.filter(pc.is_valid(table["shard"])).sort_by("video_id")
    if table.num_rows > pool_videos:
        table = table.take(sorted(random.Random(f"pool:{seed}").sample(range(table.num_rows), pool_videos)))
    return [VideoRef(r["video_id"], storage.join(root, layout.SHARDS_DIR, r["shard"]), _label(r["source_uri"]),
                     r["extension"], r["duration_s"]) for r in table.to_pylist()]


def _build_captions(root: str, keys: set[str]) -> dict[str, list[dict]]:
    folder = storage.join(root, layout.annotation_dir("captions"))
    found: dict[str, list[dict]] = {}
    for rel, uri, _ in storage.list_committed(folder):
        if not rel.endswith(".parquet"):
            continue
        t = storage.read_parquet(uri, ["video_id", "level", "start_s", "end_s", "text"])
        for row in t.to_pylist():
            if row["video_id"] in keys and row["text"]:
                found.setdefault(row["video_id"], []).append(row)
    for rows in found.values():
        rows.sort(key=lambda r: (r["level"] or "", r["start_s"] or 0.0, r["end_s"] or 0.0, r["text"]))
    return found


def load(sources: list[str], pool_videos: int, seed: int) -> tuple[list[VideoRef], list[str]]:
    """(videos, build roots among the sources). At most `pool_videos`, a seeded choice, sorted by key."""
    refs: dict[str, VideoRef] = {}
    builds = []
    for source in sources:
        if is_build(source):
            builds.append(source)
            found = _from_build(source, pool_videos, seed)
        else:
            found = [VideoRef(r["source_uri"], r["source_uri"], _label(r["source_uri"]))
                     for r in crawl.list_source(source, VIDEO_EXTENSIONS)]
        for ref in found:
            refs.setdefault(ref.key, ref)
    videos = sorted(refs.values(), key=lambda r: r.key)
    if len(videos) > pool_videos:
        videos = sorted(random.Random(f"pool:{seed}").sample(videos, pool_videos), key=lambda r: r.key)
    return videos, builds


def captions_for(builds: list[str], keys: set[str]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for root in builds:
        for key, rows in _build_captions(root, keys).items():
            found.setdefault(key, rows)
    return found


@contextlib.contextmanager
def local_copy(ref: VideoRef) -> Iterator[str]:
    """A local path of the video for the duration of the block (extracted from its shard or downloaded)."""
    if not ref.extension and not storage.is_s3(ref.uri):
        yield ref.uri
        return
    tmp = tempdirs.mkdtemp(prefix="longvid-niah-")
    try:
        if ref.extension:
            path = sharding.extract_videos(ref.uri, [{"video_id": ref.key, "extension": ref.extension}], tmp)[ref.key]
        else:
            path = os.path.join(tmp, "video." + (storage.extension(ref.uri) or "bin"))
            with open(path, "wb") as dst:
                storage.copy_into(ref.uri, dst)
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def duration_of(path: str) -> float | None:
    """Seconds of the first video stream (None when the file cannot be read)."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            if container.duration:
                return container.duration / 1_000_000
    except Exception:
        return None
    return None

