"""End to end on real videos through an in-process Ray: manifests, rejects, scenes, sampling plans, shards, resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import sampling
from pipeline.core import runner
from schemas import layout, tables
from tests.conftest import make_config


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def build(corpus, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    cfg = make_config([corpus.root], out, ["shard.max_samples=2", "probe.part_size=3", "scenes.part_size=2"])
    result = runner.run_build(cfg)
    return out, result


def _videos(out: Path) -> list[dict]:
    return pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()


def _rejects(out: Path) -> list[dict]:
    return pq.read_table(out / layout.MANIFEST_REJECTS).to_pylist()


def test_every_input_in_exactly_one_table(build, corpus):
    out, _ = build
    inputs = {str(p) for p in corpus.root.rglob("*") if p.suffix in (".mp4", ".webm")}
    accepted = [v["source_uri"] for v in _videos(out)]
    rejected = [r["source_uri"] for r in _rejects(out)]
    assert sorted(accepted + rejected) == sorted(inputs)
    assert not set(accepted) & set(rejected)
    assert str(corpus.root / "notes.txt") not in accepted + rejected


def test_reject_reasons_and_duplicate(build, corpus):
    out, _ = build
    by_uri = {r["source_uri"]: r for r in _rejects(out)}
    for name, reason in corpus.broken.items():
        row = by_uri[str(corpus.root / name)]
        assert row["reason"] == reason, row
        assert row["message"]
    copy, original = corpus.duplicate
    kept = {v["source_uri"]: v for v in _videos(out)}
    # the kept copy is the first by URI; the other is a duplicate reject naming its video_id
    uris = sorted([str(corpus.root / copy), str(corpus.root / original)])
    assert uris[0] in kept
    dup = by_uri[uris[1]]
    assert dup["reason"] == "duplicate"
    assert dup["duplicate_of"] == kept[uris[0]]["video_id"]


def test_videos_table_schema_ids_scenes_and_plans(build, corpus):
    out, _ = build
    table = pq.read_table(out / layout.MANIFEST_VIDEOS)
    assert table.schema.equals(tables.VIDEOS, check_metadata=False)
    videos = {Path(v["source_uri"]).relative_to(corpus.root).as_posix(): v for v in table.to_pylist()}
    for name, video in corpus.good.items():
        if name == "cuts.mp4" and name not in videos:
            name = corpus.duplicate[0]
        row = videos[name]
        data = (corpus.root / name).read_bytes()
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert row["video_id"] == row["sha256"][:20]
        assert row["duration_s"] == pytest.approx(video.duration_s, abs=0.1)
        cuts = [s["start_s"] for s in row["scenes"][1:]]
        assert len(cuts) == len(video.cut_times_s)
        for found, expected in zip(cuts, video.cut_times_s):
            assert abs(found - expected) <= 0.5
        assert row["scenes"][0]["start_s"] == 0.0
        assert row["scenes"][-1]["end_s"] == pytest.approx(row["duration_s"])
        plans = {p["stage"]: p for p in row["sampling"]}
        assert set(plans) == {"stage1", "stage2", "stage3", "stage4"}
        for stage, (tmin, tmax, kind) in {"stage1": (1, 4, "middle"), "stage3": (64, 512, "dynamic_fps1")}.items():
            expected = sampling.frame_indices(row["reader_num_frames"], row["reader_fps"], tmin, tmax, kind)
            assert plans[stage]["frame_indices"] == expected
            assert plans[stage]["prompt"] == sampling.timestamp_prompt(
                row["reader_num_frames"] / row["reader_fps"], len(expected))
        assert row["has_audio"] == video.audio
        assert row["shard"] and row["shard"].startswith("longvid-")


def test_shards_read_back_with_webdataset_and_tarfile(build, corpus):
    import webdataset as wds

    out, _ = build
    index = json.loads((out / layout.SHARD_INDEX).read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and index["wids_version"] == 1
    videos = {v["video_id"]: v for v in _videos(out)}
    assert sum(s["nsamples"] for s in index["shardlist"]) == len(videos)
    assert len(index["shardlist"]) == (len(videos) + 1) // 2  # max_samples=2
    urls = [str(out / layout.SHARDS_DIR / s["url"]) for s in index["shardlist"]]
    for entry, url in zip(index["shardlist"], urls):
        assert os.path.getsize(url) == entry["filesize"]
        assert hashlib.sha256(Path(url).read_bytes()).hexdigest() == entry["sha256"]

    seen = []
    for sample in wds.WebDataset(urls, shardshuffle=False):
        key = sample["__key__"]
        seen.append(key)
        assert "." not in key and "/" not in key
        doc = json.loads(sample["json"])
        video = videos[key]
        assert doc["video_id"] == key and doc["video_field"] == video["extension"]
        assert sample[doc["video_field"]] == Path(video["source_uri"]).read_bytes()
        assert doc["sampling"]["stage3"]["frame_indices"] == [p for p in video["sampling"] if p["stage"] == "stage3"][0]["frame_indices"]
        assert doc["scenes"] == video["scenes"]
    assert seen == sorted(videos)  # shards are filled in video_id order

    with tarfile.open(urls[0]) as tar:
        members = tar.getmembers()
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        names = [m.name for m in members]
        assert names[1].endswith(".json")


def test_summary_reconciles(build, corpus):
    out, result = build
    summary = json.loads((out / layout.STATS_SUMMARY).read_text())
    assert summary == {k: v for k, v in result["summary"].items()}
    assert summary["inputs"] == summary["accepted"] + summary["rejected"]
    assert summary["accepted"] == len(corpus.good)
    expected = {}
    for reason in corpus.broken.values():
        expected[reason] = expected.get(reason, 0) + 1
    expected["duplicate"] = 1
    assert summary["rejected_by_reason"] == dict(sorted(expected.items()))
    assert summary["sharded_videos"] == summary["accepted"]


def test_rerun_is_a_no_op(build, corpus):
    out, _ = build
    before = _snapshot(out)
    cfg = make_config([corpus.root], out, ["shard.max_samples=2", "probe.part_size=3", "scenes.part_size=2"])
    runner.run_build(cfg, quiet=True)
    assert _snapshot(out) == before


def test_resume_after_losing_work_is_byte_identical(corpus, ray_local, tmp_path):
    overrides = ["shard.max_samples=3", "probe.part_size=4"]
    cfg = make_config([corpus.root], tmp_path, overrides)
    runner.run_build(cfg, quiet=True)
    before = {k: v[0] for k, v in _snapshot(tmp_path).items()}
    # simulate a crash: a probe part, a scenes part and a shard never committed, plus a stale temporary
    victims = [sorted((tmp_path / layout.PROBE_PARTS_DIR).iterdir())[0],
               sorted((tmp_path / layout.SCENES_PARTS_DIR).iterdir())[0],
               tmp_path / layout.shard_path(0)]
    for v in victims:
        v.unlink()
    (tmp_path / layout.SHARDS_DIR / "longvid-000001.tar.tmp-deadbeef").write_bytes(b"partial")
    runner.run_build(make_config([corpus.root], tmp_path, overrides), quiet=True)
    after = {k: v[0] for k, v in _snapshot(tmp_path).items()}
    assert after == before


def test_two_builds_give_identical_shards(corpus, ray_local, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        runner.run_build(make_config([corpus.root], out, ["shard.max_samples=100"]), quiet=True)
    assert (a / layout.shard_path(0)).read_bytes() == (b / layout.shard_path(0)).read_bytes()


def test_frames_payload(corpus, ray_local, tmp_path):
    from PIL import Image

    runner.run_build(make_config([corpus.root / "cuts.mp4"], tmp_path,
                                 ["shard.payload=frames", "shard.jpeg_quality=80"]), quiet=True)
    (video,) = _videos(tmp_path)
    plan = [p for p in video["sampling"] if p["stage"] == "stage3"][0]
    with tarfile.open(tmp_path / layout.shard_path(0)) as tar:
        names = tar.getnames()
        frames = [n for n in names if n.endswith(".jpg")]
        assert len(frames) == len(plan["frame_indices"]) == 64  # 12 s clip: stage3 T_min = 64
        assert frames[0] == f"{video['video_id']}.f000000.jpg"
        img = Image.open(io.BytesIO(tar.extractfile(frames[-1]).read()))
        assert img.size == (320, 240)


def test_stage_needs_its_input(corpus, ray_local, tmp_path):
    from pipeline.core.context import StageInputMissing

    with pytest.raises(StageInputMissing, match="run the `crawl` stage first"):
        runner.run_build(make_config([corpus.root], tmp_path), ["probe"], quiet=True)
