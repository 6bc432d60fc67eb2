"""stats/videos.parquet is computed by Ray tasks over runs of manifest rows and written by the driver row group by
row group as the rows arrive: how many videos a task takes, how many run at once and whether Ray runs at all change
no byte; the file's row groups have a fixed size, so its bytes are those of a whole-table write with that size; and
the per-video checks split across tasks (videos whose shard the manifest and the shard records disagree on) are
reported as one check over the whole build reports them."""

from __future__ import annotations

import io
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_stats import config, mixed_build

from pipeline.core import ray_runtime, runner
from pipeline.stats import tables as stats
from pipeline.stats.sources import BuildOutput
from pipeline.stats.tables import StatsMismatch
from pipeline.stats.videos import ManifestOrder
from schemas import layout
from schemas import stats as stats_schema


@pytest.fixture(scope="module")
def mixed(annotated_build, tmp_path_factory):
    return mixed_build(annotated_build, tmp_path_factory)


def videos_bytes(out) -> bytes:
    return (out / layout.stats_table_path("videos")).read_bytes()


def test_one_video_per_task_changes_no_byte(mixed, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    expected = videos_bytes(out)
    assert pq.read_metadata(out / layout.stats_table_path("videos")).num_rows >= 4, "several videos, several tasks"
    monkeypatch.setattr(stats_schema, "STATS_VIDEOS_PER_TASK", 1)

    ray_runtime.init()
    one_at_a_time = stats.compute(BuildOutput(str(out)), tasks_in_flight=1)
    many = stats.compute(BuildOutput(str(out)), tasks_in_flight=16)
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the same tasks, in this process
    local = stats.compute(BuildOutput(str(out)))
    for result in (one_at_a_time, many, local):
        assert result.mismatches == []
        with open(result.videos.path, "rb") as f:
            assert f.read() == expected


def test_row_groups_have_a_fixed_size_whatever_the_tasks(mixed, tmp_path, monkeypatch):
    """Rows arriving 2 at a time, written in groups of 3: the bytes of a whole-table write in groups of 3."""
    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    whole = pq.read_table(out / layout.stats_table_path("videos")).cast(stats_schema.VIDEOS)  # its schema, as written
    monkeypatch.setattr(stats_schema, "STATS_VIDEOS_PER_TASK", 2)
    monkeypatch.setattr(stats_schema, "STATS_VIDEOS_ROWS_PER_GROUP", 3)
    ray_runtime.init()
    result = stats.compute(BuildOutput(str(out)))
    expected = io.BytesIO()
    pq.write_table(whole, expected, compression="zstd", row_group_size=3)
    with open(result.videos.path, "rb") as f:
        assert f.read() == expected.getvalue()
    groups = pq.ParquetFile(result.videos.path).metadata
    assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == \
        [3] * (whole.num_rows // 3) + ([whole.num_rows % 3] if whole.num_rows % 3 else [])


def test_shard_disagreements_of_videos_in_different_tasks_are_counted_once(annotated_build, mixed, tmp_path,
                                                                           monkeypatch):
    """A video moved to another shard in the manifest (in one task) and a video only a shard record lists (in no
    task): one message counting both, with the examples sorted, as the check over the whole build gives it."""
    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    manifest = pq.read_table(out / layout.MANIFEST_VIDEOS)
    shards = manifest["shard"].to_pylist()
    moved = manifest["video_id"][len(shards) - 1].as_py()
    shards[-1] = next(s for s in shards if s and s != shards[-1])
    pq.write_table(manifest.set_column(manifest.column_names.index("shard"), "shard", pa.array(shards, pa.string())),
                   out / layout.MANIFEST_VIDEOS)
    record_path = min((out / layout.SHARD_RECORDS_DIR).glob("*.json"))
    record = json.loads(record_path.read_text())
    record["video_ids"].append("zz-not-in-the-manifest")
    record_path.write_text(json.dumps(record))
    monkeypatch.setattr(stats_schema, "STATS_VIDEOS_PER_TASK", 1)

    with pytest.raises(StatsMismatch) as err:
        runner.run_build(config(annotated_build, out), ["stats"], quiet=True)
    examples = sorted([moved, "zz-not-in-the-manifest"])
    assert (f"2 videos: manifest/videos.parquet and the shard records disagree on their shard (e.g. {examples}; "
            "rerun the `shard` stage)") in str(err.value)


def test_a_manifest_out_of_video_id_order_is_named(mixed, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    manifest = pq.read_table(out / layout.MANIFEST_VIDEOS)
    pq.write_table(manifest.take(list(reversed(range(manifest.num_rows)))), out / layout.MANIFEST_VIDEOS)
    monkeypatch.setattr(stats_schema, "STATS_VIDEOS_PER_TASK", 1)
    ray_runtime.init()
    with pytest.raises(ManifestOrder, match="manifest/videos.parquet is not in video_id order .* rerun the `shard`"):
        stats.compute(BuildOutput(str(out)))
