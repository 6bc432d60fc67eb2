"""The `stats` section of stats/summary.json is read from stats/videos.parquet a row group at a time: the same
numbers whatever the row groups, checked against a transcription of the section's rules over the whole table read
here (Python sums in video order, per-stage distinct videos)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pyarrow.parquet as pq
import pytest
from test_stats import mixed_build

from pipeline.stats import summary as stats_summary
from schemas import layout


@pytest.fixture(scope="module")
def mixed(annotated_build, tmp_path_factory):
    return mixed_build(annotated_build, tmp_path_factory)


def transcribed(videos: list[dict], stages: list[dict]) -> dict:
    """The section's video totals from the rows themselves (Python floats added left to right in file order)."""
    per_task, clips = Counter(), Counter()
    for v in videos:
        per_task.update(dict(v["annotations_per_task"]))
        clips.update(dict(v["hico_clips"]))
    curriculum = {}
    for stage in sorted({r["stage"] for r in stages}):
        tagged = [v for v in videos if stage in (v["stage_tags"] or [])]
        seconds = 0.0
        for v in tagged:
            seconds += v["duration_s"] or 0.0
        curriculum[stage] = {"videos": len(tagged), "video_hours": round(seconds / 3600, 6)}
    return {"captions": sum(v["captions"] for v in videos), "qa": sum(v["qa"] for v in videos),
            "grounding": sum(v["grounding"] for v in videos), "per_task": dict(sorted(per_task.items())),
            "hico_clips": dict(sorted(clips.items())),
            "random_init_videos": sum(bool(v["random_init"]) for v in videos), "curriculum": curriculum}


def totals(section: dict) -> dict:
    return {**{k: section["annotations"][k] for k in ("captions", "qa", "grounding", "per_task")},
            "hico_clips": section["hico_clips"], "random_init_videos": section["random_init_videos"],
            "curriculum": {s: {"videos": c["videos"], "video_hours": c["video_hours"]}
                           for s, c in section["curriculum"].items()}}


@pytest.mark.parametrize("rows_per_group", [None, 1, 3])
def test_section_is_the_same_whatever_the_row_groups(mixed, tmp_path, rows_per_group):
    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    path = out / layout.stats_table_path("videos")
    table = pq.read_table(path)
    if rows_per_group:
        pq.write_table(table, path, row_group_size=rows_per_group, compression="zstd")
        assert pq.ParquetFile(path).num_row_groups == -(-table.num_rows // rows_per_group)
    written = json.loads((out / layout.STATS_SUMMARY).read_text())
    summary = {k: v for k, v in written.items() if k != "stats"}
    section = stats_summary.section(str(out), summary)
    assert section == written["stats"]  # what the stage wrote from its single-group file
    expected = transcribed(table.to_pylist(), pq.read_table(out / layout.stats_table_path("stages")).to_pylist())
    assert totals(section) == expected
    assert expected["captions"] > 0 and expected["curriculum"]
    assert all(c["videos"] > 0 for c in expected["curriculum"].values())
