"""The annotate and hico stages' planning on a fabricated fraction of LongVid (benchmarks/scale_fabricate.py, with
the hico outputs): the committed checks run in Ray tasks over groups of shards, and resume still skips exactly the
committed shards; the QVHighlights export is the one JSONL a single pass over the shards gives, whatever the group
size. Small groups (3 shards) make several tasks out of the build's shards."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from conftest import make_config  # noqa: E402

from pipeline.core import runner  # noqa: E402
from pipeline.core.context import StageContext, StageInputMissing  # noqa: E402
from pipeline.ingest import sharded_videos  # noqa: E402
from pipeline.stages import annotate, hico  # noqa: E402
from schemas import layout  # noqa: E402

FRACTION = 0.002
GROUP = 3


@pytest.fixture(scope="module")
def fabricated(ray_local, tmp_path_factory):
    from scale import OVERRIDES
    from scale_fabricate import fabricate

    out = tmp_path_factory.mktemp("planning") / "out"
    cfg = make_config([out.parent], out, OVERRIDES, stages=["shard", "annotate", "hico"])
    counts = fabricate(StageContext(cfg), FRACTION, log=lambda m: None, hico=True)
    assert counts["shards"] > 2 * GROUP
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sharded_videos, "SHARDS_PER_TASK", GROUP)
        result = runner.run_build(cfg, quiet=True)
    return out, cfg, counts, result


@pytest.fixture
def small_groups(monkeypatch):
    monkeypatch.setattr(sharded_videos, "SHARDS_PER_TASK", GROUP)


def _snapshot(root: Path, folders: list[str]) -> dict:
    return {str(p): p.stat().st_mtime_ns for f in folders for p in sorted((root / f).rglob("*")) if p.is_file()}


def test_every_fabricated_shard_is_committed(fabricated):
    out, cfg, counts, result = fabricated
    ann, tok = result["stages"]["annotate"], result["stages"]["hico"]
    assert ann["shards"] == tok["shards"] == counts["shards"]
    assert (ann["captions"], ann["qa"], ann["grounding"]) == (counts["captions"], counts["qa"], counts["grounding"])
    index = pq.read_table(out / layout.hico_index_path(cfg.hico.stage))
    assert tok["clips"] == sum(index["num_rows"].to_pylist()) > counts["videos"]


def _expected_qvhighlights(out: Path, clip_s: float) -> bytes:
    """The export transcribed: every shard's grounding rows in shard order, each shard's sorted by (video, start,
    query), one QVHighlights record per row with qids counting from 0 over the whole build."""
    lines, qid = [], 0
    for part in sorted((out / layout.annotation_dir("grounding")).glob("*.parquet")):
        rows = pq.read_table(part).to_pylist()
        for r in sorted(rows, key=lambda r: (r["video_id"], r["start_s"], r["query"])):
            first = math.floor(r["start_s"] / clip_s)
            last = max(first, math.ceil(r["end_s"] / clip_s) - 1)
            clips = list(range(first, last + 1))
            lines.append(json.dumps({"qid": qid, "query": r["query"], "duration": round(r["duration_s"], 3),
                                     "vid": r["video_id"],
                                     "relevant_windows": [[round(r["start_s"], 2), round(r["end_s"], 2)]],
                                     "relevant_clip_ids": clips, "saliency_scores": [[4, 4, 4]] * len(clips)},
                                    ensure_ascii=False) + "\n")
            qid += 1
    return "".join(lines).encode("utf-8")


def test_qvhighlights_export_is_one_pass_over_the_shards(fabricated, monkeypatch):
    out, cfg, counts, _ = fabricated
    got = (out / layout.GROUNDING_QVH).read_bytes()
    assert got == _expected_qvhighlights(out, cfg.annotate.qvh_clip_s)
    assert got.count(b"\n") == counts["grounding"]
    assert not (out / layout.QVH_PIECES_DIR).exists()  # the groups' pieces the driver copied in are removed
    monkeypatch.setattr(sharded_videos, "SHARDS_PER_TASK", 1000)  # one task for every shard: the same bytes
    (out / layout.GROUNDING_QVH).unlink()
    runner.run_build(cfg, ["annotate"], quiet=True)
    assert (out / layout.GROUNDING_QVH).read_bytes() == got


def test_a_record_that_miscounts_its_grounding_rows_stops_the_export(fabricated, small_groups):
    out, cfg, _, _ = fabricated
    name = layout.shard_name(GROUP)
    record_path = out / layout.annotation_record_path(name)
    record = record_path.read_bytes()
    export = (out / layout.GROUNDING_QVH).read_bytes()
    wrong = json.loads(record)
    wrong["counts"]["grounding"] += 1
    try:
        record_path.write_text(json.dumps(wrong))
        with pytest.raises(Exception, match=f"grounding of {name} holds .* rows, its annotation record"):
            runner.run_build(cfg, ["annotate"], quiet=True)
        assert (out / layout.GROUNDING_QVH).read_bytes() == export  # the committed export is left as it was
        assert not (out / layout.QVH_PIECES_DIR).exists()  # and the other groups' pieces are removed
    finally:
        record_path.write_bytes(record)


def test_rerun_rewrites_nothing(fabricated, small_groups):
    out, cfg, _, _ = fabricated
    folders = ["annotations", "hico", "shards"]
    before = _snapshot(out, folders)
    runner.run_build(cfg, ["annotate", "hico"], quiet=True)
    assert _snapshot(out, folders) == before


def _todo(units: list[dict]) -> list[str]:
    return [u["shard"] for u in units]


def test_annotate_resume_redoes_only_the_changed_shards(fabricated, small_groups):
    out, cfg, counts, _ = fabricated
    ctx = StageContext(cfg)
    done, todo = annotate._units(ctx)
    names = [layout.shard_name(i) for i in range(counts["shards"])]
    assert list(done.grounding) == names and todo == []
    assert sum(done.grounding.values()) == done.counts["grounding"] == counts["grounding"]

    stale, missing = names[1], names[GROUP + 1]
    record_path = out / layout.annotation_record_path(stale)
    record = record_path.read_bytes()
    grounding = out / layout.annotation_path("grounding", missing)
    kept = grounding.read_bytes()
    try:
        record_path.write_text(json.dumps({**json.loads(record), "digest": "an older digest"}))
        grounding.unlink()
        done, todo = annotate._units(ctx)
        assert _todo(todo) == [stale, missing]
        assert list(done.grounding) == [n for n in names if n not in (stale, missing)]
        assert todo[0]["record_uri"].endswith(layout.annotation_record_path(stale))
        assert todo[0]["digest"] == json.loads(record)["digest"]
    finally:
        record_path.write_bytes(record)
        grounding.write_bytes(kept)


def test_hico_resume_redoes_only_the_changed_shards(fabricated, small_groups):
    out, cfg, counts, _ = fabricated
    ctx = StageContext(cfg)
    weights = hico.weights_digest(cfg)
    planned = list(hico._units(ctx, weights))
    assert len(planned) == math.ceil(counts["shards"] / GROUP)
    assert sum(p["shards"] for p in planned) == counts["shards"] and not any(p["todo"] for p in planned)

    stage = cfg.hico.stage
    names = [layout.shard_name(i) for i in range(counts["shards"])]
    stale, missing = names[0], names[-1]
    record_path = out / layout.hico_record_path(stage, stale)
    record = record_path.read_bytes()
    tokens = out / layout.hico_part_path(stage, missing)
    kept = tokens.read_bytes()
    try:
        record_path.write_text(json.dumps({**json.loads(record), "digest": "an older digest"}))
        tokens.unlink()
        planned = list(hico._units(ctx, weights))
        assert [u["shard"] for p in planned for u in p["todo"]] == [stale, missing]
        assert sum(p["shards"] for p in planned) == counts["shards"] - 2
        assert list(hico._units(ctx, "other weights"))[0]["shards"] == 0  # new weights: every shard again
    finally:
        record_path.write_bytes(record)
        tokens.write_bytes(kept)


def test_hico_refuses_plans_of_other_sampling_settings(fabricated, small_groups):
    _, cfg, _, _ = fabricated
    from schemas import config as config_schema

    stage = cfg.hico.stage
    more = cfg.sampling.stages[stage].max_frames + 8
    other = config_schema.build(config_schema.to_dict(cfg), [f"sampling.stages.{stage}.max_frames={more}"])
    with pytest.raises(StageInputMissing, match="run the `shard` stage first"):
        list(hico._units(StageContext(other), hico.weights_digest(other)))


def _index_rows_from_records(out: Path, stage: str) -> list[dict]:
    """The index transcribed from the hico records: every segment of every record, in (video, file, row group)
    order."""
    segments = [s for p in sorted((out / layout.hico_records_dir(stage)).glob("*.json"))
                for s in json.loads(p.read_text())["segments"]]
    return sorted(segments, key=lambda s: (s["video_id"], s["file"], s["row_group"]))


def test_hico_index_is_the_records_segments_whatever_the_grouping(fabricated, monkeypatch):
    out, cfg, _, _ = fabricated
    from compressors import token_store

    index = out / layout.hico_index_path(cfg.hico.stage)
    expected = _index_rows_from_records(out, cfg.hico.stage)
    monkeypatch.setattr(token_store, "INDEX_ROW_GROUP_ROWS", 7)  # the driver writes several row groups
    written = {}
    for shards_per_task in (GROUP, 1000):
        monkeypatch.setattr(sharded_videos, "SHARDS_PER_TASK", shards_per_task)
        index.unlink()
        runner.run_build(cfg, ["hico"], quiet=True)
        written[shards_per_task] = index.read_bytes()
        f = pq.ParquetFile(index)
        assert f.metadata.num_row_groups == math.ceil(len(expected) / 7) > 1
        assert [f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups - 1)] == \
            [7] * (f.metadata.num_row_groups - 1)
        assert f.read().to_pylist() == expected
    assert written[GROUP] == written[1000]
    monkeypatch.undo()
    index.unlink()
    runner.run_build(cfg, ["hico"], quiet=True)
    assert pq.ParquetFile(index).metadata.num_row_groups == 1 and pq.read_table(index).to_pylist() == expected


def test_hico_index_part_read_from_records_is_the_planned_part(fabricated):
    out, cfg, _, _ = fabricated
    ctx = StageContext(cfg)
    group = next(sharded_videos.shard_groups(ctx, GROUP))
    planned, part = hico.plan_shards(group, ctx, hico.weights_digest(cfg))
    assert planned["todo"] == [] and planned["names"] is None and part.num_rows > len(group)
    assert hico.index_part([shard.name for shard in group], ctx).equals(part)
