"""The `shard` stage plans over Arrow columns and writes the manifest as partitions come back
(pipeline/ingest/shard_plan.py); `hico` and `annotate` read the persisted manifest a shard at a time
(pipeline/ingest/sharded_videos.py). Checked against the row-by-row `manifest.assemble`, which the probe and scenes
stages still use, on the session's annotated build (good, broken, too short and duplicate inputs, two shards)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import copy_build, make_config

from pipeline.core import runner
from pipeline.core.context import StageContext, StageInputMissing
from pipeline.ingest import manifest, shard_plan, sharded_videos
from pipeline.io import storage
from schemas import layout, tables


def config(build, out: Path):
    return make_config(build.sources, out, list(build.overrides))


def _hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and "/work/" not in f"/{p.relative_to(out)}"}


def test_persisted_manifest_is_the_assembled_one_byte_for_byte(annotated_build):
    m = manifest.assemble(StageContext(config(annotated_build, annotated_build.out)))
    assert len(m.videos) == 4 and {r["reason"] for r in m.rejects} >= {"duplicate"}
    videos = (annotated_build.out / layout.MANIFEST_VIDEOS).read_bytes()
    rejects = (annotated_build.out / layout.MANIFEST_REJECTS).read_bytes()
    assert videos == storage.parquet_bytes(tables.to_table(m.videos, tables.VIDEOS))
    assert rejects == storage.parquet_bytes(tables.to_table(m.rejects, tables.REJECTS))


def test_several_shards_per_task_and_a_rerun_change_no_byte(annotated_build, tmp_path, monkeypatch):
    from pipeline.stages import shard

    out = copy_build(annotated_build, tmp_path / "out")
    before = _hashes(out)
    monkeypatch.setattr(shard, "SHARDS_PER_TASK", 3)
    result = runner.run_build(config(annotated_build, out), ["shard"], quiet=True)
    assert result["stages"]["shard"]["shards"] == 2 and result["summary"]["sharded_videos"] == 4
    assert _hashes(out) == before


def test_videos_writer_cuts_row_groups_only_past_its_size(annotated_build, tmp_path, monkeypatch):
    # rows as the shard tasks make them (Arrow built from Python rows)
    whole = tables.to_table(pq.read_table(annotated_build.out / layout.MANIFEST_VIDEOS).to_pylist(), tables.VIDEOS)
    pieces = [whole.slice(0, 1), whole.slice(1, 2), whole.slice(3)]

    def write(path: Path) -> None:
        writer = shard_plan.VideosWriter(str(path))
        for piece in pieces:
            writer.add(piece)
        writer.close()

    write(tmp_path / "one.parquet")  # fewer rows than a group: what a whole-table write gives
    assert (tmp_path / "one.parquet").read_bytes() == storage.parquet_bytes(whole)
    monkeypatch.setattr(shard_plan, "VIDEOS_ROWS_PER_GROUP", 3)
    write(tmp_path / "groups.parquet")
    f = pq.ParquetFile(tmp_path / "groups.parquet")
    assert [f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups)] == [3, 1]
    assert f.read().equals(whole)


def test_sharded_videos_reads_each_shard_from_any_row_group_layout(annotated_build, tmp_path):
    out = copy_build(annotated_build, tmp_path / "out")
    ctx = StageContext(config(annotated_build, out))
    whole = pq.read_table(out / layout.MANIFEST_VIDEOS)
    expected = {}
    for v in whole.select(["video_id", "shard"]).to_pylist():
        expected.setdefault(v["shard"], []).append(v["video_id"])
    assert len(expected) == 2
    for rows_per_group in (None, 1, 3):  # group statistics decide which groups read_shard opens
        pq.write_table(whole, out / layout.MANIFEST_VIDEOS, row_group_size=rows_per_group)
        seen = {s.name: rows["video_id"].to_pylist() for s, rows in sharded_videos.iter_shards(ctx, ["extension"])}
        assert seen == expected
        for name, ids in expected.items():
            assert [r["video_id"] for r in sharded_videos.read_shard(str(out), name, ["video_id"])] == ids
    assert sharded_videos.shard_names(ctx) == sorted(expected)


def test_a_video_in_no_committed_shard_asks_for_the_shard_stage(annotated_build, tmp_path):
    out = copy_build(annotated_build, tmp_path / "out")
    whole = pq.read_table(out / layout.MANIFEST_VIDEOS)
    shards = whole["shard"].to_pylist()
    shards[-1] = None
    pq.write_table(whole.set_column(whole.column_names.index("shard"), "shard", pa.array(shards, pa.string())),
                   out / layout.MANIFEST_VIDEOS)
    with pytest.raises(StageInputMissing, match=r"is in no committed shard: run the `shard` stage first"):
        list(sharded_videos.iter_shards(StageContext(config(annotated_build, out)), ["extension"]))


@pytest.mark.parametrize("gather_rows, parts_per_read", [(1, 1), (3, 2)])
def test_the_shard_stage_writes_the_same_bytes_when_the_plan_works_in_many_small_groups(
        annotated_build, tmp_path, monkeypatch, gather_rows, parts_per_read):
    from pipeline.stages import shard

    out = copy_build(annotated_build, tmp_path / "out")
    before = _hashes(out)
    for rel in (layout.MANIFEST_VIDEOS, layout.MANIFEST_REJECTS, layout.SHARD_INDEX):
        (out / rel).unlink()
    # a gather task per partition (or per few videos), a read task per part (or two), a partition per shard
    monkeypatch.setattr(shard_plan, "GATHER_ROWS", gather_rows)
    monkeypatch.setattr(shard_plan, "PARTS_PER_READ_TASK", parts_per_read)
    monkeypatch.setattr(shard, "SHARDS_PER_TASK", 1)
    runner.run_build(config(annotated_build, out), ["shard"], quiet=True)
    assert _hashes(out) == before


def test_the_driver_keeps_fixed_width_keys_per_video_and_a_scene_failure_is_the_reject_assemble_makes(
        annotated_build, tmp_path, monkeypatch):
    from pipeline.core import summary
    from pipeline.ingest import manifest_refresh

    out = copy_build(annotated_build, tmp_path / "out")
    part = max((out / layout.SCENES_PARTS_DIR).glob("*.parquet"))
    rows = pq.read_table(part).to_pylist()
    rows[0].update(ok=False, reason="unreadable", message="scene detection failed: broken stream", scenes=None)
    pq.write_table(tables.to_table(rows, tables.SCENES_PART), part)
    ctx = StageContext(config(annotated_build, out))
    m = manifest.assemble(ctx)
    assert [r["stage"] for r in m.rejects].count("scenes") == 1 and len(m.videos) == 3

    monkeypatch.setattr(shard_plan, "GATHER_ROWS", 1)
    plan = shard_plan.build(ctx)
    per_video = {k: v for k, v in vars(plan).items() if isinstance(v, np.ndarray) and k != "probe_starts"}
    assert {k: (v.dtype, len(v)) for k, v in per_video.items()} == {
        "videos": (np.int32, 3), "positions": (np.int32, 3), "reject_rows": (np.int32, len(m.rejects))}
    got, _ = manifest_refresh.refresh(ctx, "scenes")
    assert got == summary.summarize(m)
    assert (out / layout.MANIFEST_VIDEOS).read_bytes() == storage.parquet_bytes(tables.to_table(m.videos, tables.VIDEOS))
    assert (out / layout.MANIFEST_REJECTS).read_bytes() == storage.parquet_bytes(
        tables.to_table(m.rejects, tables.REJECTS))
