"""The mixture checks of a large (curriculum stage, task) run in bounded parts: runs of row groups of members.parquet
and line-aligned byte ranges of its JSONL, their record ids exchanged by hash bucket. Checked with parts of a few
rows and a few hundred bytes on the session's mixed build: the stats tables keep every byte, and a missing JSONL
line, a repeated id, a line that is not JSON and a dangling member row are reported exactly as the one-part check
reports them when the rows involved lie in different parts."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_stats import mixed_build

from pipeline.core import ray_runtime
from pipeline.stats import mixtures
from pipeline.stats import tables as stats
from pipeline.stats.sources import BuildOutput
from schemas import layout

TINY = {"member_rows": 3, "jsonl_bytes": 300}
WHOLE = {"member_rows": 1 << 40, "jsonl_bytes": 1 << 40}


@pytest.fixture(scope="module")
def mixed(annotated_build, tmp_path_factory):
    return mixed_build(annotated_build, tmp_path_factory)


@pytest.fixture
def small_groups(mixed, tmp_path):
    """A copy of the mixed build whose members.parquet files have row groups of 2 rows."""
    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    for stage in BuildOutput(str(out)).mixture_stages():
        path = out / layout.mixture_members_path(stage)
        pq.write_table(pq.read_table(path), path, row_group_size=2)
    return out


def written_tables(out) -> dict:
    return {name: pq.read_table(out / layout.stats_table_path(name)) for name in layout.STATS_TABLES}


def split_tasks(out, stage: str) -> dict[str, mixtures.TaskPlan]:
    return {t.task: t for t in mixtures._plan_stage(BuildOutput(str(out)), stage, TINY["member_rows"],
                                                     TINY["jsonl_bytes"]).tasks}


def test_tiny_parts_change_no_byte(small_groups, monkeypatch):
    out = small_groups
    expected = written_tables(out)
    plans = [t for s in BuildOutput(str(out)).mixture_stages() for t in split_tasks(out, s).values()]
    assert sum(t.buckets > 1 for t in plans) >= 4, "several tasks are cut into parts"
    assert any(len(t.member_parts) > 2 and len(t.jsonl_parts) > 2 for t in plans)

    ray_runtime.init()
    split = stats.compute(BuildOutput(str(out)), tasks_in_flight=3, **TINY)
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the same parts, in this process
    local = stats.compute(BuildOutput(str(out)), **TINY)
    for result in (split, local):
        assert result.mismatches == []
        for name, table in expected.items():
            assert result.tables[name].equals(table), name


def test_mismatches_across_parts_are_reported_as_in_one_part(small_groups):
    out = small_groups
    plans = split_tasks(out, "stage3")
    lossy, repeated, broken = sorted((t for t in plans.values() if len(t.jsonl_parts) > 2),
                                     key=lambda t: (-len(t.jsonl_parts), t.task))[:3]
    # 1. a line from the middle of one task's JSONL lost
    path = out / layout.mixture_task_path("stage3", lossy.task)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lost = json.loads(lines[len(lines) // 2])["id"]
    path.write_text("".join(lines[:len(lines) // 2] + lines[len(lines) // 2 + 1:]), encoding="utf-8")
    # 2. another task's first line repeated at its end (a different byte range)
    path = out / layout.mixture_task_path("stage3", repeated.task)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    twice = json.loads(lines[0])["id"]
    path.write_text("".join(lines + lines[:1]), encoding="utf-8")
    # 3. a third task's last line not JSON (its number counts the lines of the parts before it)
    path = out / layout.mixture_task_path("stage3", broken.task)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-1] + ["{not json\n"]), encoding="utf-8")
    # 4. two member rows, in the first and the last row group of a task, pointing past their annotation table
    members_path = out / layout.mixture_members_path("stage3")
    members = pq.read_table(members_path)
    tasks = members["task"].to_pylist()
    rows = [i for i, t in enumerate(tasks) if t == lossy.task]
    keys = members["source_key"].to_pylist()
    dangling = []
    for i in (rows[0], rows[-1]):
        keys[i] = f"{keys[i].rsplit(':', 1)[0]}:999999"
        dangling.append(f"{members['source_table'][i].as_py()}/{keys[i]}")
    members = members.set_column(members.column_names.index("source_key"), "source_key", pa.array(keys, pa.string()))
    pq.write_table(members, members_path, row_group_size=2)
    assert len(split_tasks(out, "stage3")[lossy.task].member_parts) > 2

    ray_runtime.init()
    whole = stats.compute(BuildOutput(str(out)), **WHOLE)
    split = stats.compute(BuildOutput(str(out)), **TINY)
    assert split.mismatches == whole.mismatches
    message = "\n".join(split.mismatches)
    lossy_file = layout.mixture_task_path("stage3", lossy.task)
    assert f"{lossy_file} and mixtures/stage3/members.parquet disagree on record ids: 0 only in the file " \
           f"(e.g. []), 1 only in the members (e.g. ['{lost}'])" in message
    repeated_file = layout.mixture_task_path("stage3", repeated.task)
    assert f"{repeated_file}: ids repeated on several lines: ['{twice}']" in message
    broken_file = layout.mixture_task_path("stage3", broken.task)
    assert f"{broken_file}: lines [{len(lines)}] are not JSON records with an id" in message
    assert f"mixtures/stage3/members.parquet: 2 rows point at annotation rows that do not exist or belong to " \
           f"another video (e.g. {sorted(dangling)};" in message
