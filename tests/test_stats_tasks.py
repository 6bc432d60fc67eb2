"""The `stats` stage's mixture checks run as one Ray task per (curriculum stage, task), each reading its own rows of
members.parquet and its JSONL: how many run at once, how members.parquet is cut into row groups and whether Ray runs
at all change no byte of the stats tables, and a disagreement planted in one task is reported with its examples."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import make_config
from test_stats import mixed_build

from pipeline.core import ray_runtime, runner
from pipeline.stats import tables as stats
from pipeline.stats.sources import BuildOutput
from pipeline.stats.tables import StatsMismatch
from schemas import layout


@pytest.fixture(scope="module")
def mixed(annotated_build, tmp_path_factory):
    return mixed_build(annotated_build, tmp_path_factory)


def written_tables(out) -> dict:
    return {name: pq.read_table(out / layout.stats_table_path(name)) for name in layout.STATS_TABLES}


def test_tasks_in_flight_and_row_groups_change_no_byte(mixed, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    expected = written_tables(out)
    stages = expected["stages"]
    assert stages.num_rows >= 8 and len(pc.unique(stages["stage"])) >= 2, "several (stage, task) units"
    # members.parquet cut into row groups of 5 rows: tasks start and end inside groups, records span groups
    for stage in pc.unique(stages["stage"]).to_pylist():
        path = out / layout.mixture_members_path(stage)
        members = pq.read_table(path)
        pq.write_table(members, path, row_group_size=5)
        assert pq.ParquetFile(path).num_row_groups > 2

    ray_runtime.init()
    one = stats.compute(BuildOutput(str(out)), tasks_in_flight=1)
    many = stats.compute(BuildOutput(str(out)), tasks_in_flight=16)
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the same checks in this process, without Ray
    local = stats.compute(BuildOutput(str(out)))
    for result in (one, many, local):
        assert result.mismatches == []
        for name, table in expected.items():
            assert result.tables[name].equals(table), name


def test_record_ids_planted_in_one_task_are_reported_with_examples(annotated_build, mixed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    stages = pq.read_table(out / layout.stats_table_path("stages")).to_pylist()
    target = max((r for r in stages if r["stage"] == "stage2"), key=lambda r: (r["samples"], r["task"]))
    assert target["samples"] >= 3
    stage, task = target["stage"], target["task"]
    jsonl = out / layout.mixture_task_path(stage, task)
    lines = jsonl.read_text(encoding="utf-8").splitlines(keepends=True)
    replaced = []
    for i, new_id in ((0, "zz-planted-b"), (len(lines) - 1, "zz-planted-a")):
        record = json.loads(lines[i])
        replaced.append(str(record["id"]))
        record["id"] = new_id
        lines[i] = json.dumps(record) + "\n"
    jsonl.write_text("".join(lines), encoding="utf-8")

    with pytest.raises(StatsMismatch) as err:
        runner.run_build(make_config(annotated_build.sources, out, list(annotated_build.overrides)), ["stats"],
                         quiet=True)
    problems = [line.removeprefix("  - ") for line in str(err.value).splitlines()[1:]]
    assert problems == [
        f"{layout.mixture_task_path(stage, task)} and {layout.mixture_members_path(stage)} disagree on record ids: "
        f"2 only in the file (e.g. ['zz-planted-a', 'zz-planted-b']), 2 only in the members "
        f"(e.g. {sorted(replaced)})"]


def test_annotation_files_naming_videos_outside_the_manifest_are_each_named(mixed, tmp_path):
    """The manifest's ids are looked up once per group of shards: each file holding unknown videos is still named
    with its own count and examples, in (table, path) order, and the files around it are not."""
    from pipeline.io import storage
    from pipeline.stats import inputs
    from pipeline.stats.annotations import read_annotations

    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    planted = {("qa", -1): ["ghost-b", "ghost-a", "ghost-b"], ("grounding", 0): ["ghost-c"]}
    expected = []
    for (table, which), ghosts in planted.items():
        path = sorted((out / layout.annotation_dir(table)).glob("*.parquet"))[which]
        rows = pq.read_table(path)
        assert rows.num_rows >= len(ghosts)
        ids = rows["video_id"].to_pylist()
        ids[:len(ghosts)] = ghosts
        pq.write_table(rows.set_column(rows.schema.get_field_index("video_id"), "video_id",
                                       pa.array(ids, pa.string())), path)
        relative = str(path.relative_to(out))
        unique = sorted(set(ghosts))
        expected.append((["captions", "qa", "grounding", "rejects"].index(table), relative,
                         f"{relative}: {len(unique)} videos are not in manifest/videos.parquet (e.g. {unique}; "
                         "rerun the `annotate` stage)"))
    messages: list[str] = []
    keys = inputs.manifest_keys(str(out), storage.settings())
    read_annotations(BuildOutput(str(out)), keys, messages)
    assert [m for m in messages if "not in manifest" in m] == [m for *_, m in sorted(expected)]


def test_per_video_payloads_are_spooled_by_the_tasks_and_removed_even_on_failure(mixed, tmp_path, monkeypatch):
    """Under Ray each group's per-video payload (here the shard membership) is a file under work/stats-spool/ that
    the task wrote, holding what the same check returns without Ray; the checks remove the folder when they end,
    and also when they fail."""
    import os

    import ray

    from pipeline.io import storage
    from pipeline.stats import inputs, remote
    from schemas import stats as stats_schema

    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    build = BuildOutput(str(out))
    local_keys = inputs.manifest_keys(str(out), storage.settings())
    ray_runtime.init()
    refs = stats.shard_rows(build, remote.call(inputs.manifest_keys, str(out), storage.settings())).in_shards
    markers = [ray.get(ref) for ref in refs]
    assert markers and all(isinstance(m, remote.Spooled) for m in markers)
    assert all(m.uri.startswith(str(out / layout.STATS_SPOOL_DIR)) and os.path.isfile(m.uri) for m in markers)
    with monkeypatch.context() as m:
        m.setattr(ray, "is_initialized", lambda: False)
        expected = stats.shard_rows(build, local_keys).in_shards
    assert [remote.get(ref) for ref in refs] == expected
    assert sum(t.num_rows for t in expected) == pq.read_metadata(out / layout.MANIFEST_VIDEOS).num_rows

    assert stats.compute(build).mismatches == []
    assert not (out / layout.STATS_SPOOL_DIR).exists()

    # a manifest out of video_id order fails the stats/videos rows, after the payloads were spooled
    manifest = pq.read_table(out / layout.MANIFEST_VIDEOS)
    pq.write_table(manifest.take(list(range(manifest.num_rows - 1, -1, -1))), out / layout.MANIFEST_VIDEOS)
    monkeypatch.setattr(stats_schema, "STATS_VIDEOS_PER_TASK", 1)
    with pytest.raises(stats.stats_videos.ManifestOrder):
        stats.compute(build)
    assert not (out / layout.STATS_SPOOL_DIR).exists()


def test_stats_on_s3_spool_their_payloads_there_and_leave_none(mixed, moto_endpoint):
    """The same build on S3 (moto_server): the spooled payloads are objects under the output prefix, the tables are
    those of the local build, and no spooled object is left."""
    from conftest import s3_client

    from pipeline.io import storage
    from pipeline.stats import inputs, remote

    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="stats-spool")
    for path in sorted(p for p in mixed[0].rglob("*") if p.is_file()):
        client.upload_file(str(path), "stats-spool", f"build/{path.relative_to(mixed[0])}")
    out = "s3://stats-spool/build"
    storage.configure(moto_endpoint)
    ray_runtime.init()
    build = BuildOutput(out)
    refs = stats.shard_rows(build, remote.call(inputs.manifest_keys, out, storage.settings())).in_shards
    import ray

    uris = [ray.get(ref).uri for ref in refs]
    assert uris and all(u.startswith(f"{out}/{layout.STATS_SPOOL_DIR}/") and storage.exists(u) for u in uris)

    result = stats.compute(build)
    assert result.mismatches == []
    for name, table in written_tables(mixed[0]).items():
        assert result.tables[name].equals(table), name
    left = client.list_objects_v2(Bucket="stats-spool", Prefix=f"build/{layout.STATS_SPOOL_DIR}/")
    assert left.get("KeyCount", 0) == 0
