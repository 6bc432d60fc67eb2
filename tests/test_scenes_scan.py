"""The `scenes` stage's scan of the parts still to do (pipeline/stages/scenes.py `pending_units`): it reads only keys
of the probe parts in Ray tasks and hands each pending part its probe rows by reference. Checked against the
row-by-row reference (`manifest.assemble`'s accepted videos and `manifest.scenes_parts`), with read and gather
groups of one part and one video as well as the defaults, on the session's annotated build."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import copy_build, make_config

from pipeline.core.context import StageContext
from pipeline.ingest import manifest, shard_plan
from pipeline.stages import scenes
from schemas import layout


def _reference(ctx: StageContext) -> list[tuple[str, list[dict]]]:
    m = manifest.assemble(ctx)
    by_id = {r["video_id"]: r for r in m.candidates}
    committed = manifest.committed_parts(ctx, layout.SCENES_PARTS_DIR)
    return [(manifest.part_uri(ctx, layout.SCENES_PARTS_DIR, part), [by_id[k] for k in part.keys])
            for part in manifest.scenes_parts(ctx, list(by_id)) if part.name not in committed]


def _scheduled(ctx: StageContext) -> list[tuple[str, list[dict]]]:
    return [(uri, list(rows)) for uri, rows in scenes.pending_units(ctx)]


@pytest.mark.parametrize("tiny_groups", [True, False])
def test_scan_schedules_the_videos_of_the_row_by_row_reference(annotated_build, tmp_path, monkeypatch, tiny_groups):
    if tiny_groups:
        monkeypatch.setattr(shard_plan, "PARTS_PER_READ_TASK", 1)
        monkeypatch.setattr(shard_plan, "GATHER_ROWS", 1)
    out = copy_build(annotated_build, tmp_path / "out")
    # one video a part: the build's committed parts (four videos each) are planned for other parts
    ctx = StageContext(make_config(annotated_build.sources, out, list(annotated_build.overrides)
                                   + ["scenes.part_size=1"]))
    expected = _reference(ctx)
    assert len(expected) == 4 and all(len(rows) == 1 for _, rows in expected)
    assert _scheduled(ctx) == expected

    for uri, _ in expected[::2]:  # two of them committed since: only the others are scheduled
        Path(uri).write_bytes(Path(next((out / layout.SCENES_PARTS_DIR).glob("*.parquet"))).read_bytes())
    expected = _reference(ctx)
    assert len(expected) == 2
    assert _scheduled(ctx) == expected


def test_scan_of_a_build_with_every_part_committed_schedules_nothing(annotated_build, tmp_path):
    out = copy_build(annotated_build, tmp_path / "out")
    ctx = StageContext(make_config(annotated_build.sources, out, list(annotated_build.overrides)))
    assert _reference(ctx) == [] and _scheduled(ctx) == []
    for part in (out / layout.SCENES_PARTS_DIR).glob("*.parquet"):
        part.unlink()
    expected = _reference(ctx)
    assert sum(len(rows) for _, rows in expected) == 4
    assert _scheduled(ctx) == expected
