"""A build whose shard plan shrinks (fewer inputs) keeps no files of the shards it no longer has: tars, records,
HiCo token files and annotation tables of unplanned shards are removed by the stages that own them, so everything
that lists a folder (audit views, stats) sees exactly the planned build."""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from pipeline.core import runner
from schemas import layout
from tests.conftest import copy_build, make_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _shard_files(out) -> dict[str, list[str]]:
    """shard stem -> files (relative) named after it anywhere in the build."""
    found: dict[str, list[str]] = {}
    for root, _, files in os.walk(out):
        for name in files:
            if name.startswith(layout.SHARD_PREFIX + "-"):
                stem = name.split(".", 1)[0]
                found.setdefault(stem, []).append(os.path.relpath(os.path.join(root, name), out))
    return found


def test_shrunk_plan_leaves_no_files_of_unplanned_shards(annotated_build, corpus, tmp_path):
    out = copy_build(annotated_build, tmp_path / "build")
    before = _shard_files(out)
    assert sorted(before) == ["longvid-000000", "longvid-000001"]
    # same settings, fewer inputs: two good videos make one shard
    sources = [corpus.root / "cuts.mp4", corpus.root / "with audio and spaces.mp4"]
    cfg = make_config(sources, out, annotated_build.overrides, stages=["ingest", "hico", "annotate"])
    runner.run_build(cfg, quiet=True)

    after = _shard_files(out)
    assert sorted(after) == ["longvid-000000"], after.get("longvid-000001")
    # the surviving shard's outputs are all there: tar, record, tokens, token record, four tables, annotate record
    assert len(after["longvid-000000"]) == len(before["longvid-000000"])
    videos = {v["video_id"] for v in pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()}
    assert len(videos) == 2
    for table in ("captions", "qa", "grounding"):
        rows = pq.read_table(out / layout.annotation_dir(table)).to_pylist()  # every file in the folder
        assert rows and {r["video_id"] for r in rows} <= videos, table
    hico = pq.read_table(out / layout.hico_part_path("stage2", 0), columns=["video_id"]).to_pylist()
    assert {r["video_id"] for r in hico} == videos
