"""The report's sample gallery: a seeded pick of sharded videos, a few frames of each decoded from its shard (the
bytes the trainer reads), with their timestamps."""

from __future__ import annotations

import io
import os
import random
import shutil
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import tempdirs
from pipeline.ingest import sharding
from pipeline.io import frames as frame_io
from pipeline.stats.sources import BuildOutput
from schemas import layout
from schemas.sampling import frame_indices

THUMB_WIDTH = 200


@dataclass
class GalleryVideo:
    video: dict  # manifest row (video_id, shard, extension, duration_s, reader_num_frames, reader_fps, ...)
    frames_png: list[bytes] = field(default_factory=list)
    timestamps_s: list[float] = field(default_factory=list)
    error: str | None = None  # why no frames could be shown


MANIFEST_COLUMNS = ["video_id", "shard", "extension", "duration_s", "reader_num_frames", "reader_fps", "source_uri"]


def pick(videos: pa.Table, count: int, seed: int) -> list[dict]:
    """`count` sharded videos chosen by `seed` (the same build and seed always show the same videos): a seeded
    sample of the sharded videos sorted by video_id."""
    return pick_from_batches(lambda columns: iter([videos.select(columns)]), count, seed, videos.column_names)


def pick_from_batches(batches: Callable[[list[str]], Iterator[pa.Table]], count: int, seed: int,
                      columns: list[str] = MANIFEST_COLUMNS) -> list[dict]:
    """pick() over a manifest read in batches (`batches(columns)`, called twice), the chosen rows with `columns`.
    The sample depends only on how many sharded videos there are, so it is drawn as positions among their sorted
    ids: the driver holds those ids (one string per video, ~25 bytes at 20-character ids) and their sort order (8
    bytes a video), no sorted copy, and only the chosen rows of the other columns."""
    chosen = _chosen_ids(batches, count, seed)
    pa.default_memory_pool().release_unused()  # the ids' pages: without this the RSS kept them (measured)
    if chosen is None:
        return []
    rows = _sharded(pa.concat_tables([t.filter(pc.is_in(t["video_id"], value_set=chosen))
                                      for t in batches(columns)]))
    return rows.take(pc.sort_indices(rows["video_id"])).to_pylist()


def _chosen_ids(batches: Callable[[list[str]], Iterator[pa.Table]], count: int, seed: int) -> pa.Array | None:
    """The ids of the sharded videos at the seeded positions of their sorted order, sorted; None when none is."""
    ids = pa.chunked_array([_sharded(t)["video_id"] for t in batches(["video_id", "shard"])], pa.string())
    positions = random.Random(seed).sample(range(len(ids)), min(count, len(ids)))
    if not positions:
        return None
    order = pc.sort_indices(ids)
    return ids.take(order.take(pa.array(sorted(positions), pa.int64()))).combine_chunks()


def _sharded(videos: pa.Table) -> pa.Table:
    return videos.filter(pc.fill_null(pc.not_equal(videos["shard"], ""), False))


def _thumbnail(frame) -> bytes:
    from PIL import Image

    image = Image.fromarray(frame)
    if image.width > THUMB_WIDTH:
        image = image.resize((THUMB_WIDTH, max(1, round(image.height * THUMB_WIDTH / image.width))),
                             Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def load(out: BuildOutput, chosen: list[dict], frames_per_video: int) -> list[GalleryVideo]:
    entries = [GalleryVideo(v) for v in chosen]
    by_shard: dict[str, list[GalleryVideo]] = {}
    for e in entries:
        by_shard.setdefault(e.video["shard"], []).append(e)
    tmp = tempdirs.mkdtemp(prefix="longvid-report-")
    try:
        for shard, group in sorted(by_shard.items()):
            try:
                paths = sharding.extract_videos(out.uri(f"{layout.SHARDS_DIR}/{shard}"), [e.video for e in group],
                                                tmp, missing_ok=True)
            except (OSError, tarfile.TarError) as err:
                paths, reason = {}, f"cannot read {shard}: {err}"
            else:
                reason = f"not found in {shard}"
            for e in group:
                path = paths.get(e.video["video_id"])
                if path is None:
                    e.error = reason
                    continue
                _decode(e, path, frames_per_video)
                os.unlink(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entries


def _decode(entry: GalleryVideo, path: str, count: int) -> None:
    v = entry.video
    vlen, fps = v["reader_num_frames"], v["reader_fps"]
    if not vlen or not fps:
        entry.error = "the training reader saw no frames"
        return
    indices = frame_indices(vlen, fps, count, count, "middle")
    try:
        decoded = frame_io.read_frames(path, indices)
    except Exception as err:  # a decoder failure shows in the gallery instead of failing the report
        entry.error = f"decoding failed: {err}"
        return
    entry.frames_png = [_thumbnail(f) for f in decoded]
    entry.timestamps_s = [i / fps for i in indices]
