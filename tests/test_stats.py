"""The `stats` stage on a real build (the session's annotated build, mixed by the real `mix` stage): every table is
checked against the outputs it summarises, read here without the code under test; a corrupted copy fails the stage
with messages naming each disagreement; a rerun changes no byte.

`mixed_build()` (mix + stats + report on a private copy, built once per session) is shared with test_audit.py and
test_report.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import copy_build, make_config

from pipeline.core import runner
from pipeline.stats.tables import StatsMismatch
from schemas import layout
from schemas import stats as stats_schema

STAGES = ("mix", "stats", "report")
_MIXED: dict[str, object] = {}


def mixed_build(annotated_build, tmp_path_factory) -> tuple[Path, dict]:
    """(output folder, run_build result) of mix + stats + report on a private copy of the annotated build; built once
    per session. Read-only for tests: copy it before changing anything."""
    if "out" not in _MIXED:
        out = copy_build(annotated_build, tmp_path_factory.mktemp("mixed-build") / "out")
        _MIXED["result"] = runner.run_build(config(annotated_build, out), list(STAGES), quiet=True)
        _MIXED["out"] = out
    return _MIXED["out"], _MIXED["result"]


def config(build, out: Path, overrides=()):
    return make_config(build.sources, out, list(build.overrides) + list(overrides))


@pytest.fixture(scope="module")
def mixed(annotated_build, tmp_path_factory):
    return mixed_build(annotated_build, tmp_path_factory)


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def parts(out: Path, folder: str) -> list[Path]:
    return sorted((out / folder).glob("*.parquet"))


def stats_table(out: Path, name: str) -> list[dict]:
    table = pq.read_table(out / layout.stats_table_path(name))
    assert table.schema.equals(stats_schema.SCHEMAS[name], check_metadata=False), name
    return table.to_pylist()


def jsonl_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_videos_table_matches_manifest_annotations_hico_and_mixtures(mixed):
    out, _ = mixed
    manifest = {v["video_id"]: v for v in rows(out / layout.MANIFEST_VIDEOS)}
    table = {r["video_id"]: r for r in stats_table(out, "videos")}
    assert set(table) == set(manifest) and len(table) == 4

    tasks: dict[str, Counter] = defaultdict(Counter)
    for p in parts(out, "annotations/captions"):
        for r in rows(p):
            tasks[r["video_id"]]["summary" if r["level"] == "video" else "caption"] += 1
    for p in parts(out, "annotations/qa"):
        for r in rows(p):
            tasks[r["video_id"]][r["family"]] += 1
    for p in parts(out, "annotations/grounding"):
        for r in rows(p):
            tasks[r["video_id"]]["grounding"] += 1
    rejected = Counter(r["video_id"] for p in parts(out, "annotations/rejects") for r in rows(p))
    clips = Counter(r["video_id"] for p in (out / "hico").glob("*/longvid-*.parquet")
                    for r in pq.read_table(p, columns=["video_id"]).to_pylist())
    tags = defaultdict(set)
    for members in (out / layout.MIXTURES_DIR).glob(f"*/{layout.MIX_MEMBERS_NAME}"):
        for r in rows(members):
            tags[r["video_id"]].add(members.parent.name)

    for vid, s in table.items():
        m = manifest[vid]
        for name in ("source_uri", "shard", "codec", "container", "width", "height", "fps", "duration_s",
                     "reader_num_frames", "reader_fps", "has_audio", "bytes"):
            assert s[name] == m[name], (vid, name)
        assert s["scenes"] == len(m["scenes"]) > 0
        assert s["scenes_per_minute"] == pytest.approx(len(m["scenes"]) / (m["duration_s"] / 60))
        assert dict(s["frames_per_stage"]) == {p["stage"]: len(p["frame_indices"]) for p in m["sampling"]}
        assert dict(s["annotations_per_task"]) == dict(tasks[vid]) and tasks[vid]
        assert s["captions"] == tasks[vid]["caption"] + tasks[vid]["summary"]
        assert s["grounding"] == tasks[vid]["grounding"]
        assert s["captions"] + s["qa"] + s["grounding"] == sum(tasks[vid].values())
        assert s["annotation_rejects"] == rejected[vid]
        assert dict(s["hico_clips"]) == {"stage2": clips[vid]} and clips[vid] > 0
        assert s["stage_tags"] == sorted(tags[vid]) and s["stage_tags"]
        assert s["random_init"] is True  # tiny random-weight models made this build


def test_shards_table_matches_index_and_tars(mixed):
    out, _ = mixed
    index = json.loads((out / layout.SHARD_INDEX).read_text())["shardlist"]
    durations = {v["video_id"]: v["duration_s"] for v in rows(out / layout.MANIFEST_VIDEOS)}
    table = stats_table(out, "shards")
    assert [r["shard"] for r in table] == [e["url"] for e in index] and len(table) == 2
    for r, entry in zip(table, index):
        tar = out / layout.SHARDS_DIR / r["shard"]
        assert r["bytes"] == tar.stat().st_size == entry["filesize"]
        assert r["sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest()
        record = json.loads((out / layout.SHARD_RECORDS_DIR / f"{layout.shard_stem(r['shard'])}.json").read_text())
        assert r["samples"] == len(record["video_ids"]) == entry["nsamples"]
        assert r["hours"] == pytest.approx(sum(durations[v] for v in record["video_ids"]) / 3600, abs=1e-6)
    assert sum(r["samples"] for r in table) == len(durations)


def test_rejects_table_counts_every_reject(mixed):
    out, _ = mixed
    table = stats_table(out, "rejects")
    manifest_rejects = rows(out / layout.MANIFEST_REJECTS)
    inputs = {(r["stage"], r["reason"]): r["count"] for r in table if r["scope"] == "input"}
    assert inputs == dict(Counter((r["stage"], r["reason"]) for r in manifest_rejects))
    assert inputs[("probe", "unreadable")] == 4 and inputs[("dedup", "duplicate")] == 1
    outputs = [r for r in table if r["scope"] == "annotation"]
    raw = [r for p in parts(out, "annotations/rejects") for r in rows(p)]
    assert sum(r["count"] for r in outputs) == len(raw) > 0
    assert {(r["task"], r["reason"]) for r in outputs} == {(r["task"], stats_schema.reason_group(r["reason"]))
                                                          for r in raw}
    for scope in ("input", "annotation"):
        assert sum(r["share"] for r in table if r["scope"] == scope) == pytest.approx(1.0, abs=1e-5)
    assert [r["count"] for r in table if r["scope"] == "input"] == sorted(inputs.values(), reverse=True)


def test_stages_table_equals_mixture_files(mixed):
    out, _ = mixed
    table = stats_table(out, "stages")
    files = sorted((out / layout.MIXTURES_DIR).glob("*/*.jsonl"))
    assert {(r["stage"], r["task"]) for r in table} == {(f.parent.name, f.stem) for f in files}
    assert {r["stage"] for r in table} == {"stage1", "stage2", "stage3", "stage4"}
    for r in table:
        records = jsonl_records(out / layout.mixture_task_path(r["stage"], r["task"]))
        members = [m for m in rows(out / layout.mixture_members_path(r["stage"])) if m["task"] == r["task"]]
        assert r["samples"] == len(records) == len({m["record_id"] for m in members}) > 0
        assert {rec["id"] for rec in records} == {m["record_id"] for m in members}
        assert r["annotations"] == len(members)
        assert r["videos"] == len({m["video_id"] for m in members})
        per_record = {m["record_id"]: m for m in members}
        assert r["hours"] == pytest.approx(sum(m["duration_s"] for m in per_record.values()) / 3600, abs=1e-6)
        assert r["visual_tokens"] == sum(m["visual_tokens"] for m in per_record.values()) > 0
        # the documented count: words and punctuation of every turn, the <image> placeholder left out
        words = sum(len(stats_schema.TEXT_TOKEN_PATTERN.findall(t["value"].replace("<image>", " ")))
                    for rec in records for t in rec["conversations"])
        assert r["text_tokens"] == words > 0
        # every task descends from the tiny random model's captions (template QA inherits their provenance)
        assert r["random_init"] is True


def test_summary_reconciles(mixed):
    out, result = mixed
    summary = json.loads((out / layout.STATS_SUMMARY).read_text())
    assert summary["inputs"] == summary["accepted"] + summary["rejected"] == 11
    section = summary["stats"]
    assert section["up_to_date"] is True and "note" not in section
    for stage, c in section["curriculum"].items():
        lines = sum(len(jsonl_records(f)) for f in (out / layout.mixture_dir(stage)).glob("*.jsonl"))
        assert c["samples"] == lines == sum(c["tasks"].values())
    assert section["annotations"]["rejected_outputs"] == sum(pq.read_metadata(p).num_rows
                                                             for p in parts(out, "annotations/rejects"))
    assert section["random_init_videos"] == 4
    assert result["stages"]["stats"]["reconciled"] is True and result["stages"]["stats"]["mixtures"] == "built"
    # the runner's summary after the stage wrote the same file: one writer's bytes, not two
    assert result["summary"]["inputs"] == 11


def test_summary_section_read_a_video_at_a_time_counts_each_stages_videos(mixed, monkeypatch):
    """The stats section of summary.json sums stats/videos.parquet a batch at a time: one-row batches give the
    written section, whose per-stage videos and hours are those of the videos in the stage's membership table."""
    from pipeline.core import summary
    from pipeline.stats import summary as stats_summary

    out, _ = mixed
    written = json.loads((out / layout.STATS_SUMMARY).read_text())["stats"]
    monkeypatch.setattr(stats_schema, "TABLE_BATCH_ROWS", 1)
    assert stats_summary.section(str(out), summary.summarize_persisted(str(out))) == written
    durations = {v["video_id"]: v["duration_s"] for v in rows(out / layout.MANIFEST_VIDEOS)}
    for stage, c in written["curriculum"].items():
        videos = {m["video_id"] for m in rows(out / layout.mixture_members_path(stage))}
        assert c["videos"] == len(videos) > 0
        assert c["video_hours"] == pytest.approx(sum(durations[v] for v in videos) / 3600, abs=1e-6)


def test_text_token_count_is_words_and_punctuation():
    assert stats_schema.count_text_tokens("<image>\nHow many shots? 3 shots.") == 7
    assert stats_schema.reason_group("not valid JSON (Expecting value at char 0)") == "not valid JSON"
    assert stats_schema.reason_group("start 12.5 is not before end 3") == "start N is not before end N"


def _snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*"))
            if p.is_file()}


def test_rerun_changes_no_byte(annotated_build, mixed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    cfg = config(annotated_build, out)
    for moved in (True, False):
        before = _snapshot(out)
        runner.run_build(cfg, list(STAGES), quiet=True)
        after = _snapshot(out)
        assert after.keys() == before.keys()
        changed = [k for k in before if before[k] != after[k]]
        # the report names its output root, so only it changes once after the copy moved the build
        assert changed == ([layout.REPORT_HTML] if moved else []), changed


def test_corrupted_build_fails_naming_each_mismatch(annotated_build, mixed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    cfg = config(annotated_build, out)
    # 1. a training record lost from a mixture file
    jsonl = out / layout.mixture_task_path("stage3", "caption")
    lines = jsonl.read_text(encoding="utf-8").splitlines(keepends=True)
    jsonl.write_text("".join(lines[:-1]), encoding="utf-8")
    # 2. a rejected input dropped from the manifest
    rejects = pq.read_table(out / layout.MANIFEST_REJECTS)
    pq.write_table(rejects.slice(1), out / layout.MANIFEST_REJECTS)
    # 3. a shard tar that is not the one its record describes
    with open(out / layout.shard_path(1), "ab") as f:
        f.write(b"\0" * 512)
    stats_files = {p: p.stat().st_mtime_ns for p in (out / layout.STATS_DIR).glob("*.parquet")}

    with pytest.raises(StatsMismatch) as err:
        runner.run_build(cfg, ["stats"], quiet=True)
    message = str(err.value)
    assert f"mixtures/stage3/caption.jsonl has {len(lines) - 1} lines but mixtures/stage3/members.parquet lists " \
           f"{len(lines)} records of task caption (rerun the `mix` stage)" in message
    assert "inputs (11) != accepted (4) + rejected (6)" in message
    assert "1 inputs in neither manifest table" in message
    assert "shards/longvid-000001.tar holds" in message and "but its record says" in message
    # nothing was written from counts that do not add up
    assert {p: p.stat().st_mtime_ns for p in stats_files} == stats_files


def test_without_mixtures_then_mixing_makes_stats_stale(annotated_build, tmp_path):
    out = copy_build(annotated_build, tmp_path / "out")
    assert not (out / layout.MIXTURES_DIR).exists()
    cfg = config(annotated_build, out)
    result = runner.run_build(cfg, ["stats"], quiet=True)
    assert result["stages"]["stats"]["mixtures"] == "not built"
    assert stats_table(out, "stages") == []
    assert all(r["stage_tags"] == [] for r in stats_table(out, "videos"))
    section = json.loads((out / layout.STATS_SUMMARY).read_text())["stats"]
    assert section["curriculum"] == "not built (run the `mix` stage)"
    assert section["up_to_date"] is True

    # mixing after stats: the summary the runner writes says the stats tables are stale, until stats runs again
    runner.run_build(cfg, ["mix"], quiet=True)
    section = json.loads((out / layout.STATS_SUMMARY).read_text())["stats"]
    assert section["up_to_date"] is False and "rerun the `stats` stage" in section["note"]
    runner.run_build(cfg, ["stats"], quiet=True)
    section = json.loads((out / layout.STATS_SUMMARY).read_text())["stats"]
    assert section["up_to_date"] is True and set(section["curriculum"]) == {"stage1", "stage2", "stage3", "stage4"}


def test_summary_from_the_persisted_manifest_equals_the_assembled_one(annotated_build, mixed):
    """After the stages that only read the manifest, the runner and the stats stage summarise the persisted tables
    instead of assembling the manifest from every part: the same numbers, so summary.json keeps its bytes."""
    from pipeline.core import summary
    from pipeline.core.context import StageContext
    from pipeline.ingest import manifest

    out, _ = mixed
    assembled = summary.summarize(manifest.assemble(StageContext(config(annotated_build, out))))
    assert summary.summarize_persisted(str(out)) == assembled
    assert assembled["accepted"] == 4 and assembled["shards"] == 2


def test_input_reconciliation_names_lost_duplicated_and_unknown_inputs():
    """Counted with Arrow: each kind of disagreement with its count and the first URIs in sorted order."""
    import pyarrow as pa

    from pipeline.stats import inputs

    mismatches = []
    inputs.reconcile(pa.chunked_array([["d", "c", "b", "a"]]), pa.chunked_array([["b", "a", "b"]]),
                            pa.chunked_array([["x"]]), mismatches)
    assert mismatches == ["2 inputs in neither manifest table (e.g. ['c', 'd'])",
                          "1 inputs listed more than once (e.g. ['b'])",
                          "1 inputs not in manifest/crawl.parquet (e.g. ['x'])"]


def test_members_pointing_at_missing_annotation_rows_are_named(annotated_build, mixed, tmp_path):
    """A membership row whose source key names a row past the end of its annotation table, or a row of another
    video, is reported with its table and key."""
    import pyarrow as pa

    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    path = out / layout.mixture_members_path("stage3")
    members = pq.read_table(path)
    keys = members["source_key"].to_pylist()
    table = members["source_table"][0].as_py()
    stem = keys[0].rsplit(":", 1)[0]
    keys[0] = f"{stem}:999999"
    members = members.set_column(members.column_names.index("source_key"), "source_key", pa.array(keys, pa.string()))
    pq.write_table(members, path)
    with pytest.raises(StatsMismatch) as err:
        runner.run_build(config(annotated_build, out), ["stats"], quiet=True)
    message = str(err.value)
    assert "mixtures/stage3/members.parquet: 1 rows point at annotation rows that do not exist" in message
    assert f"{table}/{stem}:999999" in message


def test_members_streamed_in_small_batches_give_the_same_tables(annotated_build, mixed, tmp_path, monkeypatch):
    """members.parquet is read in batches and aggregated a task at a time: batches that cut tasks and records
    change no byte of the stats tables; a file not in (task, record_id, turn) order is named."""
    import pyarrow.compute as pc

    from pipeline.stats import mixtures

    out = tmp_path / "out"
    shutil.copytree(mixed[0], out)
    before = _snapshot(out)
    monkeypatch.setattr(mixtures, "MEMBER_BATCH_ROWS", 3)
    runner.run_build(config(annotated_build, out), ["stats"], quiet=True)
    assert _snapshot(out) == before

    path = out / layout.mixture_members_path("stage3")
    members = pq.read_table(path)
    assert len(pc.unique(members["task"])) > 1
    n = members.num_rows
    interleaved = [i for pair in zip(range(n), range(n - 1, -1, -1)) for i in pair][:n]  # first, last, second, ...
    pq.write_table(members.take(interleaved), path)
    with pytest.raises(StatsMismatch) as err:
        runner.run_build(config(annotated_build, out), ["stats"], quiet=True)
    assert "mixtures/stage3/members.parquet is not in (task, record_id, turn) order" in str(err.value)
