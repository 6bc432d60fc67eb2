"""The build summary read from the persisted manifest counts videos without scenes by their null `scenes` (an empty
list is a video with no cut, not a pending one), across row groups."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import summary
from schemas import layout, tables


def _videos(scenes: list) -> pa.Table:
    n = len(scenes)
    columns = {f.name: pa.nulls(n, f.type) if f.nullable else pa.array([""] * n).cast(f.type) for f in tables.VIDEOS}
    columns["video_id"] = pa.array([f"v{i:03d}" for i in range(n)], pa.string())
    columns["bytes"] = pa.array([100 + i for i in range(n)], pa.int64())
    columns["duration_s"] = pa.array([1.5] * n, pa.float64())
    columns["shard"] = pa.array(["longvid-000000.tar"] * n, pa.string())
    columns["scenes"] = pa.array(scenes, pa.list_(tables.SCENE))
    return pa.table(columns, schema=tables.VIDEOS)


def test_pending_scenes_are_the_null_scene_lists_in_every_row_group(tmp_path):
    scene = {"start_s": 0.0, "end_s": 1.5}
    scenes = [None, [], [scene], [scene, scene], None, [], None] * 3  # 9 null, 12 with a list (6 of them empty)
    (tmp_path / "manifest").mkdir()
    (tmp_path / "shards").mkdir()
    pq.write_table(_videos(scenes), tmp_path / layout.MANIFEST_VIDEOS, row_group_size=4)
    pq.write_table(pa.table({"source_uri": pa.array(["a"] * 22)}), tmp_path / layout.MANIFEST_CRAWL)
    pq.write_table(tables.empty(tables.REJECTS), tmp_path / layout.MANIFEST_REJECTS)
    (tmp_path / layout.SHARD_INDEX).write_text(json.dumps(
        {"shardlist": [{"url": "longvid-000000.tar", "nsamples": 21, "filesize": 10, "sha256": "0" * 64}]}))
    assert pq.ParquetFile(tmp_path / layout.MANIFEST_VIDEOS).num_row_groups == 6

    got = summary.summarize_persisted(str(tmp_path))

    assert got["pending_scenes"] == 9
    assert got["accepted"] == got["sharded_videos"] == 21
    assert got["input_bytes"] == sum(100 + i for i in range(21))
    assert got["inputs"] == 22
