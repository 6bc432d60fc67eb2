"""The streaming loader over the session's annotated build: items follow the sampling plans and the stage mixture,
the stream is the same for 0 and 2 DataLoader workers, resume yields exactly the tail, ranks split the shards, S3
reads skip video bytes, shards with a `frames` payload serve their JPEG frames without reading the video, and
third-party readers (webdataset, HF datasets) read the same shards."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import decord
import numpy as np
import pyarrow.parquet as pq
import pytest
import servers
import torch
from conftest import copy_build, make_config, s3_client

from pipeline.core import runner
from pipeline.io import storage
from pipeline.loader import LongVidDataset
from pipeline.loader import decode as loader_decode
from pipeline.loader import shards as loader_shards
from pipeline.loader.hf import hf_features
from pipeline.loader.stream import NoShardsForRank
from schemas import layout
from schemas import loader as loader_schema
from schemas.config import ConfigError
from schemas.sampling import frame_indices, timestamp_prompt

STAGE = "stage2"  # the stage the session build encodes with HiCo


@pytest.fixture(scope="module")
def build(annotated_build, tmp_path_factory) -> Path:
    """A copy of the session build with the `mix` stage run on it."""
    out = copy_build(annotated_build, tmp_path_factory.mktemp("loader") / "out")
    cfg = make_config(annotated_build.sources, out, annotated_build.overrides, stages=["mix"])
    runner.run_build(cfg, ["mix"], quiet=True)
    return out


@pytest.fixture(scope="module")
def manifest(build) -> dict[str, dict]:
    return {v["video_id"]: v for v in pq.read_table(build / layout.MANIFEST_VIDEOS).to_pylist()}


@pytest.fixture(scope="module")
def mixture(build) -> dict[str, dict]:
    """record id -> the JSONL record of the test stage, with its task and the frame count members.parquet gives."""
    return read_mixture(build, STAGE)


def read_mixture(build: Path, stage: str) -> dict[str, dict]:
    members = pq.read_table(build / layout.mixture_members_path(stage)).to_pylist()
    frames = {m["record_id"]: m["num_frames"] for m in members}
    recs = {}
    for path in (build / layout.mixture_dir(stage)).glob("*.jsonl"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            recs[rec["id"]] = {**rec, "task": path.stem, "num_frames": frames[rec["id"]]}
    return recs


def digest(array) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(array)).tobytes()).hexdigest()


def run(ds, workers: int) -> list[tuple]:
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    return [(it["sample_index"], it["video_id"], it["record_id"], digest(it["frames"])) for it in loader]


def plan_of(video: dict, stage: str) -> dict:
    return next(p for p in video["sampling"] if p["stage"] == stage)


def trainer_clip_indices(vlen, fps, start, end, plan) -> list[int]:
    """VideoChat-Flash's decord reader for a clip, transcribed independently of the loader."""
    duration = vlen / fps
    start, end = max(0, start), min(duration - 0.1, end)
    clip_vlen = int((end - start) * fps)
    idx = frame_indices(clip_vlen, fps, plan["min_frames"], plan["max_frames"], plan["sample"], 4)
    return [i + int(start * fps) for i in idx]


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage,payload", [(STAGE, "both"), ("stage3", "frames")])
def test_items_are_the_planned_frames_with_prompt_conversations_and_tokens(build, manifest, stage, payload):
    from compressors import HicoReader

    mixture = read_mixture(build, stage)
    ds = LongVidDataset(build, stage, payload=payload, shuffle_shards=False, shuffle_buffer=0)
    assert ds.mixture_dir and (ds.hico_dir is not None) == (payload == "both")
    items = list(ds)
    assert sorted(it["record_id"] for it in items) == sorted(mixture)  # every record exactly once
    assert [it["sample_index"] for it in items] == list(range(len(items)))
    tokens = HicoReader(str(build / layout.hico_dir(STAGE))) if payload == "both" else None
    clipped = 0
    for it in items:
        rec, video = mixture[it["record_id"]], manifest[it["video_id"]]
        assert (it["task"], it["conversations"]) == (rec["task"], rec["conversations"])
        plan = plan_of(video, stage)
        vlen, fps = video["reader_num_frames"], video["reader_fps"]
        if "start" in rec:
            clipped += 1
            expected = trainer_clip_indices(vlen, fps, rec["start"], rec["end"], plan)
            assert (it["start"], it["end"]) == (rec["start"], rec["end"])
            assert it["duration"] == pytest.approx(min(rec["end"], vlen / fps - 0.1) - max(rec["start"], 0))
        else:
            expected = plan["frame_indices"]
            assert it["duration"] == plan["duration_s"] and it["prompt"] == plan["prompt"]
        assert it["duration"] == pytest.approx(rec["duration"])
        assert it["frame_indices"].tolist() == expected and len(expected) == rec["num_frames"]
        assert it["timestamps"].tolist() == pytest.approx([i / fps for i in expected])
        assert it["prompt"] == timestamp_prompt(it["duration"], len(expected))
        vr = decord.VideoReader(video["source_uri"], num_threads=1)
        frames = it["frames"]
        assert frames.dtype == np.uint8 and frames.shape == (len(expected), video["height"], video["width"], 3)
        assert np.array_equal(frames, vr.get_batch(expected).asnumpy())
        if tokens is not None:
            stored = tokens.read(it["video_id"])
            if "start" not in rec:
                assert np.array_equal(it["tokens"], stored.tokens) and it["tokens"].shape[1] == 64
            assert it["tokens"].shape[0] == it["token_times"].shape[0] >= 1
    assert clipped > 0


@pytest.fixture(scope="module")
def uninterrupted(build) -> list[tuple]:
    ds = LongVidDataset(build, STAGE, shuffle_buffer=8, seed=7)
    ds.set_epoch(1)
    return run(ds, 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_yields_exactly_the_tail_of_an_uninterrupted_run(build, uninterrupted, workers):
    ds = LongVidDataset(build, STAGE, shuffle_buffer=8, seed=7)
    ds.set_epoch(1)
    full = run(ds, workers) if workers else uninterrupted
    # The stream does not depend on the worker count: a job may resume with another num_workers.
    assert full == uninterrupted
    n = len(full) // 2 + 1
    ds.set_epoch(1, start_sample=n)
    assert run(ds, workers) == full[n:]


def test_resampled_epochs_have_the_requested_length_and_resume(build):
    ds = LongVidDataset(build, STAGE, resample=True, epoch_length=13, shuffle_buffer=4, seed=3)
    ds.set_epoch(2)
    full = run(ds, 2)
    assert [f[0] for f in full] == list(range(13))
    ds.set_epoch(2, start_sample=5)
    assert run(ds, 0) == full[5:]
    ds.set_epoch(3)
    assert [k[2] for k in ds.stream_keys()] != [f[2] for f in full]


def test_epochs_and_seeds_reshuffle_and_every_record_comes_once(build, mixture):
    def order(seed, epoch):
        ds = LongVidDataset(build, STAGE, shuffle_buffer=16, seed=seed)
        ds.set_epoch(epoch)
        return [k[2] for k in ds.stream_keys()]

    base = order(0, 0)
    assert sorted(base) == sorted(mixture)
    assert order(0, 0) == base
    assert sorted(order(0, 1)) == sorted(base) and order(0, 1) != base
    assert order(1, 0) != base
    shuffled_off = LongVidDataset(build, STAGE, shuffle_shards=False, shuffle_buffer=0)
    keys = [k[1] for k in shuffled_off.stream_keys()]
    assert keys == sorted(keys)  # shards hold videos by id; records of one video stay together


def test_ranks_split_the_shards(build, mixture, monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        ds = LongVidDataset(build, STAGE, seed=5)
        assert (ds.rank, ds.world_size) == (rank, 2)
        seen.append({k[2] for k in ds.stream_keys()})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(mixture)
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(NoShardsForRank, match="2 shards for world_size 3"):
        LongVidDataset(build, STAGE)


def test_torch_distributed_rank_wins_over_the_environment(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{servers.free_port()}", rank=0, world_size=1)
    try:
        assert loader_shards.distributed_rank_world() == (0, 1)
    finally:
        dist.destroy_process_group()
    assert loader_shards.distributed_rank_world() == (1, 2)


def test_sources_url_list_shards_txt_and_root_agree(build):
    mix = build / layout.mixture_dir(STAGE)
    urls = sorted(str(p) for p in (build / layout.SHARDS_DIR).glob("*.tar"))
    from_root = LongVidDataset(build, STAGE, seed=2)
    from_txt = LongVidDataset(mix / layout.MIX_SHARDS_TXT, STAGE, seed=2)
    from_urls = LongVidDataset(urls, STAGE, seed=2, mixture=str(mix))
    assert from_root.urls == from_txt.urls == urls
    keys = list(from_root.stream_keys())
    assert list(from_txt.stream_keys()) == keys == list(from_urls.stream_keys())
    without_mixture = LongVidDataset(urls, STAGE, shuffle_shards=False, shuffle_buffer=0)
    items = list(without_mixture)
    assert [it["video_id"] for it in items] == sorted(it["video_id"] for it in items)
    assert all(it["conversations"] == [] and it["record_id"] is None for it in items)


def test_only_tasks_asked_for(build, mixture):
    ds = LongVidDataset(build, STAGE, tasks=["summary"], payload="tokens")
    items = list(ds)
    want = {r for r, rec in mixture.items() if rec["task"] == "summary"}
    assert {it["record_id"] for it in items} == want and len(items) == len(want)
    assert all("frames" not in it and it["tokens"].ndim == 3 for it in items)


def test_task_weights_set_each_tasks_share_of_the_stream(build, mixture):
    counts = {t: sum(rec["task"] == t for rec in mixture.values()) for t in ("caption", "summary")}
    assert counts["caption"] != counts["summary"]

    def share(weights, epochs=40):
        ds = LongVidDataset(build, STAGE, task_weights=weights, seed=9)
        tasks = []
        for epoch in range(epochs):
            ds.set_epoch(epoch)
            tasks += [mixture[k[2]]["task"] for k in ds.stream_keys()]
        return tasks.count("caption") / len(tasks), len(tasks) / epochs

    caption_share, per_epoch = share({"caption": 3, "summary": 1})
    assert caption_share == pytest.approx(0.75, abs=0.04) and per_epoch == pytest.approx(len(mixture), rel=0.1)
    weights = json.loads((build / layout.mixture_dir(STAGE) / layout.MIX_WEIGHTS_JSON).read_text())
    expected = weights["tasks"]["caption"]["weight"] / sum(t["weight"] for t in weights["tasks"].values())
    assert share("mixture")[0] == pytest.approx(expected, abs=0.04)
    assert expected != pytest.approx(counts["caption"] / len(mixture), abs=0.1)  # weights differ from raw counts


def test_bad_options_name_the_key_and_the_fix(build):
    with pytest.raises(ConfigError, match="payload.*one of frames, tokens, both"):
        LongVidDataset(build, STAGE, payload="pixels")
    with pytest.raises(ConfigError, match="shufle_buffer: unknown loader option.*shuffle_buffer"):
        LongVidDataset(build, STAGE, shufle_buffer=8)
    with pytest.raises(ConfigError, match="epoch_length: missing with resample"):
        LongVidDataset(build, STAGE, resample=True)
    with pytest.raises(ConfigError, match="tasks: unknown task 'chat'"):
        LongVidDataset(build, STAGE, tasks=["chat"])
    with pytest.raises(ConfigError, match="payload.*HiCo tokens of stage3.*hico.stage=stage3"):
        LongVidDataset(build, "stage3", payload="tokens")
    with pytest.raises(ConfigError, match="stage: 'stage9' has no sampling plan"):
        LongVidDataset(build, "stage9")
    urls = sorted(str(p) for p in (build / layout.SHARDS_DIR).glob("*.tar"))
    with pytest.raises(ConfigError, match="tasks: given, but no stage mixture"):
        LongVidDataset(urls, STAGE, tasks=["caption"])
    with pytest.raises(ConfigError, match="task_weights.chat: unknown task"):
        LongVidDataset(build, STAGE, task_weights={"chat": 1})


def test_pyav_fallback_decodes_the_same_frames(build, manifest):
    video = next(v for v in manifest.values() if v["codec"] == "h264")
    idx = plan_of(video, STAGE)["frame_indices"]
    data = Path(video["source_uri"]).read_bytes()
    via_decord = loader_decode.decode_frames(data, idx)
    via_pyav = loader_decode.decode_frames(data, idx, reader="pyav")
    assert via_pyav.shape == via_decord.shape
    assert np.abs(via_pyav.astype(int) - via_decord).mean() < 2.0  # same frames; colour conversion may round apart


# ---------------------------------------------------------------------------------------------------------------
# S3


@pytest.fixture(scope="module")
def s3_build(build, moto_endpoint):
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="train")
    for path in build.rglob("*"):
        rel = path.relative_to(build).as_posix()
        if path.is_file() and rel.split("/")[0] in (layout.SHARDS_DIR, layout.MIXTURES_DIR, layout.HICO_DIR):
            client.upload_file(str(path), "train", f"build/{rel}")
    return moto_endpoint, "s3://train/build"


def test_s3_streams_the_same_items_and_skips_video_bytes_while_scanning(build, s3_build, monkeypatch):
    endpoint, root = s3_build
    local = LongVidDataset(build, STAGE, payload="both", seed=4)
    remote = LongVidDataset(root, STAGE, payload="both", seed=4, s3_endpoint_url=endpoint)
    assert remote.urls == [f"{root}/{layout.SHARDS_DIR}/{Path(u).name}" for u in local.urls]

    def key(it):
        return it["sample_index"], it["record_id"], digest(it["frames"]), digest(it["tokens"])

    assert [key(it) for it in torch.utils.data.DataLoader(remote, batch_size=None, num_workers=2)] == \
        [key(it) for it in local]

    fetched = []
    ranged_get = storage.read_range

    def counting(url, offset, size):
        fetched.append(size)
        return ranged_get(url, offset, size)

    monkeypatch.setattr(storage, "read_range", counting)
    monkeypatch.setattr(loader_shards, "S3_READ_AHEAD", 8192)
    assert list(remote.stream_keys()) == list(local.stream_keys())
    shard_bytes = sum(os.path.getsize(u) for u in local.urls)
    assert 0 < sum(fetched) < shard_bytes / 5  # headers and JSON documents only


# ---------------------------------------------------------------------------------------------------------------
# Third-party readers, no project code


def test_plain_webdataset_iterates_the_shards(build, manifest):
    import webdataset as wds

    urls = sorted(str(p) for p in (build / layout.SHARDS_DIR).glob("*.tar"))
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        doc = json.loads(sample["json"])
        video = manifest[sample["__key__"]]
        assert doc["video_id"] == sample["__key__"]
        assert hashlib.sha256(sample[video["extension"]]).hexdigest() == video["sha256"]
        seen[sample["__key__"]] = doc
    assert sorted(seen) == sorted(manifest)


def test_hf_datasets_webdataset_builder_loads_the_shards(build, manifest, tmp_path):
    import datasets

    urls = sorted(str(p) for p in (build / layout.SHARDS_DIR).glob("*.tar"))
    by_shard = {u: [v for v in manifest.values() if v["shard"] == Path(u).name] for u in urls}
    uniform = [u for u, vs in by_shard.items() if len({v["extension"] for v in vs}) == 1]
    assert uniform, "the session build should hold a shard of one container"
    plain = datasets.load_dataset("webdataset", data_files={"train": uniform}, split="train",
                                  cache_dir=str(tmp_path / "plain"))
    assert sorted(plain["__key__"]) == sorted(v["video_id"] for u in uniform for v in by_shard[u])

    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train", features=hf_features(urls),
                               cache_dir=str(tmp_path / "all"))
    assert sorted(ds["__key__"]) == sorted(manifest)
    for row in ds:
        video = manifest[row["__key__"]]
        assert row["json"]["sampling"][STAGE]["frame_indices"] == plan_of(video, STAGE)["frame_indices"]
        payload = row[video["extension"]]["bytes"]
        assert hashlib.sha256(payload).hexdigest() == video["sha256"]


# ---------------------------------------------------------------------------------------------------------------
# Shards with a `frames` payload: the carried JPEG frames instead of the video

JPEG_STAGE = "stage3"  # the stage whose frames the frames-payload copy carries (64 per video here)


@pytest.fixture(scope="module")
def frames_build(build, annotated_build, tmp_path_factory) -> Path:
    """A copy of the mixed build whose shards were rewritten with shard.payload=frames (stage3 JPEGs)."""
    out = tmp_path_factory.mktemp("loader-frames") / "out"
    shutil.copytree(build, out)
    overrides = annotated_build.overrides + ["shard.payload=frames", f"shard.frames_stage={JPEG_STAGE}"]
    runner.run_build(make_config(annotated_build.sources, out, overrides, stages=["shard"]), ["shard"], quiet=True)
    return out


def video_spans(build: Path) -> dict[str, tuple[str, int, int]]:
    """video_id -> (shard file name, first byte, end) of its video member's data."""
    spans = {}
    for path in sorted((build / layout.SHARDS_DIR).glob("*.tar")):
        for s in loader_shards.scan_shard(str(path)):
            offset, size = s.video_member
            spans[s.key] = (path.name, offset, offset + size)
    return spans


def items_with_reads(ds, monkeypatch) -> list[tuple[dict, list[tuple[str, int, int]]]]:
    """Each item of an in-process iteration with the byte ranges of the shard members fetched to make it
    ((shard file name, first byte, end); the header scan's reads on S3 are left out, the S3 test above
    bounds them)."""
    reads, scanning = [], []
    ranged_get, scan_read = storage.read_range, loader_shards.S3RangeFile.read

    def recording(url, offset, size):
        if not scanning:
            reads.append((Path(url).name, offset, offset + size))
        return ranged_get(url, offset, size)

    def marked_scan_read(self, n=-1):
        scanning.append(True)
        try:
            return scan_read(self, n)
        finally:
            scanning.pop()

    out = []
    with monkeypatch.context() as m:
        m.setattr(storage, "read_range", recording)
        m.setattr(loader_shards.S3RangeFile, "read", marked_scan_read)
        for item in ds:
            out.append((item, list(reads)))
            reads.clear()
    return out


def overlaps(read, span) -> bool:
    return read[0] == span[0] and read[1] < span[2] and span[1] < read[2]


_decoded: dict = {}


def source_frames(video: dict, indices) -> np.ndarray:
    """decord's frames of the source file (memoised: records of one video share plans)."""
    key = (video["source_uri"], tuple(indices))
    if key not in _decoded:
        _decoded[key] = decord.VideoReader(video["source_uri"], num_threads=1).get_batch(list(indices)).asnumpy()
    return _decoded[key]


@pytest.mark.parametrize("frames_source", ["auto", "video"])
def test_frames_payload_serves_the_planned_frames_from_jpegs_without_reading_the_video(
        frames_build, manifest, frames_source, monkeypatch):
    ds = LongVidDataset(frames_build, JPEG_STAGE, shuffle_shards=False, shuffle_buffer=0, frames_source=frames_source)
    assert all(len(s.jpeg_members) == 64 for u in ds.urls for s in loader_shards.scan_shard(u))
    spans = video_spans(frames_build)
    jpeg_reads = video_reads = clips = 0
    for item, reads in items_with_reads(ds, monkeypatch):
        video = manifest[item["video_id"]]
        expected = source_frames(video, item["frame_indices"].tolist())
        frames = item["frames"]
        assert frames.dtype == np.uint8 and frames.shape == expected.shape
        read_video = any(overlaps(r, spans[item["video_id"]]) for r in reads)
        video_reads += read_video
        clips += item["start"] is not None
        if frames_source == "auto" and item["start"] is None:
            assert not read_video  # the JPEG members only (a cached item of the same video reads nothing)
            assert np.abs(frames.astype(int) - expected).mean() < 3  # JPEG (quality 90) loss only
            jpeg_reads += bool(reads)
        else:  # clip records sample inside their window: the carried stage frames are not theirs
            assert np.array_equal(frames, expected)
    assert clips > 0
    if frames_source == "auto":
        assert jpeg_reads == len(spans)  # each video's JPEGs read once, then its other records hit the cache
        assert 0 < video_reads <= len(spans)  # the clip records' videos, once each
    else:
        assert video_reads == len(spans)


def test_jpegs_of_another_plan_fall_back_to_the_video(frames_build, manifest, monkeypatch):
    # stage2 plans 4 frames: the 64 carried stage3 JPEGs are not its frames.
    ds = LongVidDataset(frames_build, STAGE, shuffle_shards=False, shuffle_buffer=0, tasks=["summary"])
    spans = video_spans(frames_build)
    pairs = items_with_reads(ds, monkeypatch)
    assert pairs
    for item, reads in pairs:
        expected = source_frames(manifest[item["video_id"]], item["frame_indices"].tolist())
        assert np.array_equal(item["frames"], expected)
        assert not reads or any(overlaps(r, spans[item["video_id"]]) for r in reads)


def test_forced_jpeg_source_serves_the_same_frames_or_refuses_at_once(build, frames_build):
    auto = LongVidDataset(frames_build, JPEG_STAGE, tasks=["summary"], seed=1)
    forced = LongVidDataset(frames_build, JPEG_STAGE, tasks=["summary"], seed=1, frames_source="jpeg")
    assert [digest(it["frames"]) for it in forced] == [digest(it["frames"]) for it in auto]
    with pytest.raises(ConfigError, match="frames_source: 'jpeg', but .* records of the chosen tasks are clips"):
        LongVidDataset(frames_build, JPEG_STAGE, frames_source="jpeg")
    # the shard stage records which stage its JPEGs are, so the refusal names it
    with pytest.raises(ConfigError, match="frames_source: 'jpeg', but sample .*: its JPEGs are the frames of the "
                                          "stage3 plan, not of this one.*shard.frames_stage=stage2"):
        LongVidDataset(frames_build, STAGE, tasks=["summary"], frames_source="jpeg")
    with pytest.raises(ConfigError, match="frames_source: 'jpeg', but sample .*carries no JPEG frames"):
        LongVidDataset(build, JPEG_STAGE, tasks=["summary"], frames_source="jpeg")
    with pytest.raises(ConfigError, match="frames_source: 'png' is not supported.*auto, video, jpeg"):
        LongVidDataset(frames_build, JPEG_STAGE, frames_source="png")
    with pytest.raises(ConfigError, match="frames_source: 'jpeg' with payload='tokens'"):
        LongVidDataset(frames_build, STAGE, payload="tokens", frames_source="jpeg")


def test_jpegs_of_a_plan_with_the_same_count_are_used_only_when_the_sample_names_their_stage(frames_build):
    (sample, *_) = loader_shards.scan_shard(next((frames_build / layout.SHARDS_DIR).glob("*.tar")).as_posix())
    doc = json.loads(json.dumps(sample.doc))
    plans = doc["sampling"]
    assert plans["stage3"]["frame_indices"] == plans["stage4"]["frame_indices"]  # stage4 differs in resolution only
    assert loader_decode.carried_jpegs_mismatch(doc, 64, plans["stage4"]["frame_indices"]) is None
    assert doc[loader_schema.SAMPLE_FRAMES_STAGE_KEY] == "stage3"  # the shard stage names the JPEGs' stage
    # A shard written without that key, carrying 4 stage2 frames where stage1 plans 4 other frames (`middle`
    # against `dynamic_fps1` on a longer video): unless the sample names the stage, the JPEGs could be either.
    del doc[loader_schema.SAMPLE_FRAMES_STAGE_KEY]
    two = plans["stage2"]["frame_indices"]
    one = plans["stage1"]["frame_indices"] = [i + 1 for i in two]
    assert len(two) == 4
    assert "could also be the frames of stage1" in loader_decode.carried_jpegs_mismatch(doc, 4, two)
    doc[loader_schema.SAMPLE_FRAMES_STAGE_KEY] = "stage2"
    assert loader_decode.carried_jpegs_mismatch(doc, 4, two) is None
    assert "are the frames of the stage2 plan" in loader_decode.carried_jpegs_mismatch(doc, 4, one)


def test_s3_frames_payload_fetches_only_the_jpeg_members(frames_build, s3_build, monkeypatch):
    endpoint, _ = s3_build
    client = s3_client(endpoint)
    for path in (frames_build / layout.SHARDS_DIR).glob("*"):
        client.upload_file(str(path), "train", f"frames/{layout.SHARDS_DIR}/{path.name}")
    root = "s3://train/frames"
    local = LongVidDataset(frames_build, JPEG_STAGE, seed=4)
    remote = LongVidDataset(root, JPEG_STAGE, seed=4, s3_endpoint_url=endpoint, mixture=local.mixture_dir)
    assert [(it["record_id"], digest(it["frames"]))
            for it in torch.utils.data.DataLoader(remote, batch_size=None, num_workers=2)] == \
        [(it["record_id"], digest(it["frames"])) for it in local]

    unclipped = LongVidDataset(root, JPEG_STAGE, tasks=["summary"], s3_endpoint_url=endpoint,
                               mixture=local.mixture_dir)
    spans = video_spans(frames_build)  # the same tars
    items = items_with_reads(unclipped, monkeypatch)
    assert {it["video_id"] for it, _ in items} == set(spans)
    reads = [r for _, rs in items for r in rs]
    assert len(reads) == len(spans)  # one ranged GET per video: its JPEG members
    assert not any(overlaps(r, span) for r in reads for span in spans.values())
