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
    """pick() over a manifest read in batches (`batches(columns)`, called several times), the chosen rows with
    `columns`. The sample depends only on how many sharded videos there are, so it is drawn as positions among their
    ids in sorted order. The manifest the `shard` stage writes is in video_id order: then a position is a row
    position among the sharded rows and the driver holds no id (an extra read of two columns). Otherwise it holds
    the sharded ids (~25 bytes a video) and their sort order (8 bytes), no sorted copy."""
    total, ordered = _count_sharded(batches)
    positions = sorted(random.Random(seed).sample(range(total), min(count, total)))
    if not positions:
        return []
    chosen = _ids_at_positions(batches, positions) if ordered else _sorted_ids_at_positions(batches, positions)
    rows = _sharded(pa.concat_tables([t.filter(pc.is_in(t["video_id"], value_set=chosen))
                                      for t in batches(columns)]))
    return rows.take(pc.sort_indices(rows["video_id"])).to_pylist()


def _sharded_ids(batches: Callable[[list[str]], Iterator[pa.Table]]) -> Iterator[pa.ChunkedArray]:
    for t in batches(["video_id", "shard"]):
        yield _sharded(t)["video_id"]


def _count_sharded(batches: Callable[[list[str]], Iterator[pa.Table]]) -> tuple[int, bool]:
    """(sharded videos, whether their ids come in ascending order, no null among them)."""
    total, ordered, last = 0, True, None
    for ids in _sharded_ids(batches):
        total += len(ids)
        if ordered and len(ids):
            ordered = (ids.null_count == 0 and (last is None or last <= ids[0].as_py())
                       and pc.all(pc.less_equal(ids[:-1], ids[1:])).as_py() is not False)
            last = ids[-1].as_py()
    return total, ordered


def _ids_at_positions(batches: Callable[[list[str]], Iterator[pa.Table]], positions: list[int]) -> pa.Array:
    """The sharded ids at these ascending positions, reading the ids in their (ascending) order."""
    picked, offset, i = [], 0, 0
    for ids in _sharded_ids(batches):
        mine = []
        while i < len(positions) and positions[i] < offset + len(ids):
            mine.append(positions[i] - offset)
            i += 1
        if mine:
            picked.append(ids.take(pa.array(mine, pa.int64())))
        offset += len(ids)
    return pa.chunked_array(picked, pa.string()).combine_chunks()


def _sorted_ids_at_positions(batches: Callable[[list[str]], Iterator[pa.Table]], positions: list[int]) -> pa.Array:
    """The sharded ids at these ascending positions of their sorted order."""
    ids = pa.chunked_array(list(_sharded_ids(batches)), pa.string())
    chosen = ids.take(pc.sort_indices(ids).take(pa.array(positions, pa.int64()))).combine_chunks()
    del ids
    pa.default_memory_pool().release_unused()  # the ids' pages: without this the RSS kept them (measured)
    return chosen


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
