"""The `mix` stage on a private copy of the session's annotated build (four videos of 5–12 s, two shards), with the
long threshold lowered to 10 s so the short stages take the 5–6 s videos and clips and the long stages all of them.

What a trainer relies on: the VideoChat-Flash reading of data.yaml works unchanged (paths from the file's folder,
every video opens with decord, durations are the reader's), records follow the LLaVA format with one `<image>`, the
membership table matches the files line for line, a rerun changes no byte, and a broken record commits nothing."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import copy_build, make_config, s3_client
from PIL import Image

from pipeline.core import runner
from pipeline.core.context import StageInputMissing
from pipeline.io import storage
from pipeline.mix import consume as mix_consume
from pipeline.mix import select as mix_select
from pipeline.mix.validate import MixValidationError
from schemas import config as config_schema
from schemas import layout, mixture, sampling
from schemas.config import ConfigError

LONG_MIN = "mix.long_min_s=10"
STAGES = ("stage1", "stage2", "stage3", "stage4")
PROMPT_LEAD = "The video lasts for"


def run_mix(build, out, *extra):
    cfg = make_config(build.sources, out, list(build.overrides) + [LONG_MIN, *extra], stages=["mix"])
    return runner.run_build(cfg, quiet=True)["stages"]["mix"]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def members(out: Path, stage: str) -> list[dict]:
    return pq.read_table(out / layout.mixture_members_path(stage)).to_pylist()


def videos_by_id(out: Path) -> dict[str, dict]:
    return {v["video_id"]: v for v in pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()}


def annotation_rows(out: Path) -> dict[str, dict]:
    """'<table>/<shard stem>:<row>' -> annotation row, for every caption, QA and grounding row of the build."""
    rows = {}
    for table in ("captions", "qa", "grounding"):
        for path in sorted((out / layout.ANNOTATIONS_DIR / table).glob("*.parquet")):
            for i, row in enumerate(pq.read_table(path).to_pylist()):
                rows[f"{table}/{mixture.source_key(path.stem, i)}"] = row
    return rows


def trainer_clip(vlen: int, fps: float, start: float, end: float) -> tuple[int, int, float]:
    """VideoChat-Flash's reader for a start/end sample, written out here apart from the code under test."""
    duration = vlen / float(fps)
    start = max(0, start)
    end = min(duration - 0.1, end)
    duration = end - start
    return int(start * fps), int(duration * fps), duration


def expected_frames(stage_cfg, clip_len: int, vlen: int, fps: float, record: dict) -> tuple[float, list[int]]:
    """(duration, frame indices) the trainer computes for a record on a video of vlen frames at fps."""
    if "start" in record:
        first, frames, duration = trainer_clip(vlen, fps, record["start"], record["end"])
    else:
        first, frames, duration = 0, vlen, vlen / fps
    idx = sampling.frame_indices(frames, fps, stage_cfg.min_frames, stage_cfg.max_frames, stage_cfg.sample, clip_len)
    return duration, [first + i for i in idx]


@pytest.fixture(scope="module")
def mixed(annotated_build, tmp_path_factory):
    out = copy_build(annotated_build, tmp_path_factory.mktemp("mixed") / "out")
    result = run_mix(annotated_build, out)
    return out, result


# ---------------------------------------------------------------------------------------------------------------


def test_every_stage_gets_its_files_and_counts(mixed):
    out, result = mixed
    assert set(result["records"]) == set(STAGES)
    for stage in STAGES:
        folder = out / layout.mixture_dir(stage)
        for name in (layout.MIX_DATA_YAML, layout.MIX_SHARDS_TXT, layout.MIX_WEIGHTS_JSON, layout.MIX_MEMBERS_NAME):
            assert (folder / name).is_file(), (stage, name)
        files = {p.stem: len(read_jsonl(p)) for p in folder.glob("*.jsonl")}
        assert files == result["records"][stage] and all(n > 0 for n in files.values())
        rows = members(out, stage)
        assert pq.read_schema(folder / layout.MIX_MEMBERS_NAME) == mixture.MIX_MEMBERS
        for task, n in files.items():
            ids = {r["record_id"] for r in rows if r["task"] == task}
            assert [rec["id"] for rec in read_jsonl(folder / f"{task}.jsonl")] and len(ids) == n
            assert {rec["id"] for rec in read_jsonl(folder / f"{task}.jsonl")} == ids
        weights = json.loads((folder / layout.MIX_WEIGHTS_JSON).read_text())
        assert {t: v["records"] for t, v in weights["tasks"].items()} == files
        assert sum(v["weight"] for v in weights["tasks"].values()) == pytest.approx(1.0)
        for line in (folder / layout.MIX_SHARDS_TXT).read_text().splitlines():
            assert (folder / line).resolve().is_file(), line
    # The default curriculum: captions and summaries in stages 1-2, every task in stages 3-4.
    assert set(result["records"]["stage1"]) == {"caption", "summary"}
    assert {"caption", "summary", "event_count", "grounding"} <= set(result["records"]["stage3"])
    assert result["random_init"] is True


def test_short_stages_hold_short_samples_and_long_stages_everything(mixed):
    out, _ = mixed
    durations = {s: [r["duration_s"] for r in members(out, s)] for s in STAGES}
    assert max(durations["stage1"]) < 10 and max(durations["stage2"]) < 10
    assert max(durations["stage3"]) >= 10  # the 12 s video's summary and QA
    # Stage 3 takes every task at every duration: each annotation row of the build feeds it exactly once.
    rows = annotation_rows(out)
    fed = [f"{r['source_table']}/{r['source_key']}" for r in members(out, "stage3")]
    assert sorted(fed) == sorted(rows)
    # A video and an annotation may feed several stages: the clip captions are in all four.
    clip_keys = {k for k, r in rows.items() if k.startswith("captions/") and r["level"] == "clip"}
    for stage in STAGES:
        assert clip_keys <= {f"{r['source_table']}/{r['source_key']}" for r in members(out, stage)}


def test_records_follow_the_llava_format(mixed):
    out, _ = mixed
    rows = annotation_rows(out)
    videos = videos_by_id(out)
    for stage in STAGES:
        by_id = {}
        for m in members(out, stage):
            by_id.setdefault(m["record_id"], []).append(m)
        for path in sorted((out / layout.mixture_dir(stage)).glob("*.jsonl")):
            for rec in read_jsonl(path):
                assert set(rec) <= set(mixture.RECORD_KEYS) and {"id", "video", "video_id", "conversations",
                                                                 "duration"} <= set(rec)
                convs = rec["conversations"]
                assert [c["from"] for c in convs] == ["human", "gpt"] * (len(convs) // 2)
                assert convs[0]["value"].startswith("<image>\n")
                assert sum(c["value"].count("<image>") for c in convs) == 1
                assert PROMPT_LEAD not in convs[0]["value"]  # the trainer inserts it (--time_msg short)
                assert rec["video"] == f"{rec['video_id']}.{videos[rec['video_id']]['extension']}"
                # Every turn comes from the annotation its member row points at.
                member_rows = sorted(by_id[rec["id"]], key=lambda m: m["turn"])
                assert len(member_rows) == len(convs) // 2
                for m, answer in zip(member_rows, convs[1::2]):
                    source = rows[f"{m['source_table']}/{m['source_key']}"]
                    assert source["video_id"] == rec["video_id"] == m["video_id"] and m["task"] == path.stem
                    text = source.get("text") or source.get("answer") or ""
                    assert text.strip() in answer["value"] or m["source_table"] == "grounding"
                if path.stem == "caption":
                    assert {"start", "end"} <= set(rec) and member_rows[0]["start_s"] == rec["start"]
                else:
                    assert "start" not in rec and rec["duration"] == pytest.approx(
                        videos[rec["video_id"]]["reader_num_frames"] / videos[rec["video_id"]]["reader_fps"])


def test_videochat_flash_reads_data_yaml_unchanged(annotated_build, mixed):
    """What the trainer does with a data.yaml, paths resolved from its folder: load every json_path, join data_root
    and video, open it with decord, and find the duration and frames the record and members promise."""
    import decord

    out, _ = mixed
    cfg = make_config(annotated_build.sources, out, list(annotated_build.overrides))
    opened = 0
    for stage in STAGES:
        data_yaml = out / layout.mixture_dir(stage) / layout.MIX_DATA_YAML
        folder = data_yaml.parent
        frames_of = {m["record_id"]: m["num_frames"] for m in members(out, stage)}
        for ds in yaml.safe_load(data_yaml.read_text())["datasets"]:
            assert ds["video_read_type"] == "decord" and ds["sampling_strategy"] == "all"
            records = read_jsonl(folder / ds["json_path"])
            assert len(records) > 0  # the trainer asserts a dataset is not empty
            for rec in records:
                vr = decord.VideoReader(str(folder / ds["data_root"] / rec["video"]), num_threads=1)
                vlen, fps = len(vr), vr.get_avg_fps()
                duration, idx = expected_frames(cfg.sampling.stages[stage], cfg.sampling.clip_len, vlen, fps, rec)
                assert rec["duration"] == pytest.approx(duration, abs=1e-5)
                assert frames_of[rec["id"]] == len(idx) and max(idx) < vlen
                assert vr.get_batch(idx).shape[0] == len(idx)
                opened += 1
    assert opened > 50
    # Relocation: an absolute copy of the YAML, for a trainer started anywhere.
    doc = yaml.safe_load(mix_consume.absolute_data_yaml(str(out / layout.mixture_dir("stage3") / "data.yaml")))
    for ds in doc["datasets"]:
        assert os.path.isabs(ds["json_path"]) and os.path.isfile(ds["json_path"])
        assert os.path.isdir(ds["data_root"]) and ds["data_root"] == str(out / layout.MIX_VIDEOS_DIR)


def test_rerun_changes_no_byte_and_the_seed_decides_the_order(annotated_build, mixed, tmp_path):
    out, first = mixed
    before = snapshot(out)
    assert run_mix(annotated_build, out) == first
    assert snapshot(out) == before

    other = copy_build(annotated_build, tmp_path / "seed1")
    run_mix(annotated_build, other, "mix.seed=1")
    for stage in STAGES:
        for path in (out / layout.mixture_dir(stage)).glob("*.jsonl"):
            mine = [r["id"] for r in read_jsonl(path)]
            theirs = [r["id"] for r in read_jsonl(other / path.relative_to(out))]
            assert sorted(mine) == sorted(theirs)
    orders = [[r["id"] for r in read_jsonl(root / layout.mixture_task_path("stage3", "caption"))]
              for root in (out, other)]
    assert orders[0] != orders[1]


def test_options_frames_inline_prompt_lists_variant_caps_turns(annotated_build, mixed, tmp_path):
    import decord

    base_out, _ = mixed
    out = copy_build(annotated_build, tmp_path / "out")
    run_mix(annotated_build, out)  # then change the config on the same output: stale files must go
    # Distinct grounding queries (the tiny model's captions often repeat), so every video's labels can pair up.
    for path in (out / layout.ANNOTATIONS_DIR / "grounding").glob("*.parquet"):
        table = pq.read_table(path)
        column = table.schema.get_field_index("query")
        queries = pa.array([f"event number {i}" for i in range(table.num_rows)], pa.string())
        pq.write_table(table.set_column(column, table.schema.field(column), queries), path)
    result = run_mix(annotated_build, out, "mix.stages.stage2.video_read_type=img", "mix.timestamp_prompt=inline",
                     "mix.json_list=true", "mix.internvideo2_5=true", "mix.max_turns=2", "mix.stages.stage1=null",
                     "mix.stages.stage3.tasks.grounding.max_records=2")
    cfg = make_config(annotated_build.sources, out, list(annotated_build.overrides))
    videos = videos_by_id(out)
    rows = annotation_rows(out)
    assert not (out / layout.mixture_dir("stage1")).exists()
    assert result["records"]["stage3"]["grounding"] == 2
    assert {r["task"] for r in members(out, "stage3") if r["task"] == "grounding"} == {"grounding"}
    assert len({r["record_id"] for r in members(out, "stage3") if r["task"] == "grounding"}) == 2
    # Caps draw a seeded subset; record ids do not move.
    capped = {r["id"] for r in read_jsonl(out / layout.mixture_task_path("stage3", "grounding"))}
    assert capped <= {r["id"] for r in read_jsonl(base_out / layout.mixture_task_path("stage3", "grounding"))}

    for stage in ("stage2", "stage3", "stage4"):
        folder = out / layout.mixture_dir(stage)
        st = cfg.sampling.stages[stage]
        meta = json.loads((folder / layout.MIX_INTERNVIDEO_DIR / layout.MIX_INTERNVIDEO_META).read_text())
        stage_members = members(out, stage)
        for path in sorted(folder.glob("*.jsonl")):
            records = read_jsonl(path)
            assert json.loads(path.with_suffix(".json").read_text()) == records
            variant = read_jsonl(folder / layout.MIX_INTERNVIDEO_DIR / path.name)
            assert [r["id"] for r in variant] == [r["id"] for r in records]
            assert all(r["duration"] > 0 and "video_id" not in r for r in variant)
            assert meta[f"longvid_{stage}_{path.stem}"]["length"] == len(records)
            for rec in records:
                convs = rec["conversations"]
                mine = [m for m in stage_members if m["record_id"] == rec["id"]]
                assert len(convs) == 2 * len(mine) <= 4
                # Never the open and the mc form of one question in one conversation.
                sources = [rows[f"{m['source_table']}/{m['source_key']}"] for m in mine]
                topics = [src.get("question") or src.get("query") for src in sources]
                assert len(mine) == 1 or len(set(topics)) == len(topics)
                video = videos[rec["video_id"]]
                vlen, fps = video["reader_num_frames"], video["reader_fps"]
                as_trainer = dict(rec, start=mine[0]["start_s"], end=mine[0]["end_s"]) \
                    if mine[0]["start_s"] is not None else rec
                duration, idx = expected_frames(st, cfg.sampling.clip_len, vlen, fps, as_trainer)
                # the training text: "<image>\n" + sentence + "\n" + question (--time_msg short)
                assert convs[0]["value"] == (f"<image>\nThe video lasts for {duration:.2f} seconds, and {len(idx)} "
                                             f"frames are uniformly sampled from it. \n"
                                             + convs[0]["value"].split("sampled from it. \n", 1)[1])
                if stage != "stage2":
                    continue
                # Frame payloads: <prefix>_<n>.jpg at the stage's sampled frames, no start/end on the record.
                assert "start" not in rec
                frame_dir = folder / layout.MIX_FRAMES_DIR / rec["video"]
                names = sorted(os.listdir(frame_dir))
                assert names == [mixture.frame_file_name("frame", k) for k in range(len(idx))]
                vr = decord.VideoReader(str(out / layout.mix_video_path(video["video_id"], video["extension"])))
                want = vr.get_batch(idx).asnumpy().astype(np.int16)
                got = np.stack([np.asarray(Image.open(frame_dir / n).convert("RGB")) for n in names]).astype(np.int16)
                assert got.shape == want.shape and np.abs(got - want).mean() < 6
    data = yaml.safe_load((out / layout.mixture_dir("stage2") / layout.MIX_DATA_YAML).read_text())
    assert {(d["video_read_type"], d["data_root"]) for d in data["datasets"]} == {("img", "frames")}
    # Multi-turn grouping keeps every annotation: apart from the capped task, stage 3 still holds each row once.
    grouped = sorted(f"{m['source_table']}/{m['source_key']}" for m in members(out, "stage3")
                     if m["task"] != "grounding")
    assert grouped == sorted(k for k in rows if not k.startswith("grounding/"))
    per_video = {}
    for key, row in rows.items():
        if key.startswith("grounding/"):
            per_video[row["video_id"]] = per_video.get(row["video_id"], 0) + 1
    assert result["records"]["stage4"]["grounding"] == sum((n + 1) // 2 for n in per_video.values())


def test_grouping_and_clips_pure():
    video = mix_select.VideoInfo("v" * 20, "mp4", "longvid-000000.tar", vlen=250, fps=25.0)
    rows = [mix_select.AnnotationRow("qa", f"longvid-000000:{i}", {
        "video_id": video.video_id, "family": "event_count", "form": form, "question": q, "answer": "2",
        "options": ["1", "2", "3", "4"] if form == "mc" else []}) for i, (q, form) in enumerate(
        [("How many?", "open"), ("How many?", "mc"), ("Which first?", "open"), ("When?", "open")])]
    rows.append(mix_select.AnnotationRow("captions", "longvid-000000:9", {
        "video_id": video.video_id, "level": "clip", "start_s": 8.0, "end_s": 10.0, "text": "a dog runs"}))
    rows.append(mix_select.AnnotationRow("captions", "longvid-000000:10", {
        "video_id": video.video_id, "level": "clip", "start_s": 9.95, "end_s": 10.0, "text": "too late"}))
    cands = mix_select.candidates(rows, {video.video_id: video}, max_turns=2)
    qa = [c for c in cands if c.task == "event_count"]
    assert [[t.source_key for t in c.turns] for c in qa] == [["longvid-000000:0", "longvid-000000:2"],
                                                              ["longvid-000000:1", "longvid-000000:3"]]
    clips = [c for c in cands if c.task == "caption"]
    assert [c.clip for c in clips] == [(8.0, 9.9)]  # ends where the trainer clamps; the 50 ms clip holds no frame
    duration, idx = mix_select.plan(clips[0], video, "stage3", config_schema.SamplingConfig())
    # 47 frames in the clip: stage 3's 64-frame minimum drops to 44, the clip's whole clips of 4
    assert duration == pytest.approx(1.9) and len(idx) == 44 and idx[0] >= 200 and max(idx) < 247


def test_a_broken_record_commits_nothing(annotated_build, tmp_path):
    out = copy_build(annotated_build, tmp_path / "out")
    path = next((out / layout.ANNOTATIONS_DIR / "captions").glob("*.parquet"))
    table = pq.read_table(path)
    texts = table.column("text").to_pylist()
    texts[0] = "a cat <image> jumps"  # a model echoing the image token would give a record two of them
    column = table.schema.get_field_index("text")
    pq.write_table(table.set_column(column, table.schema.field(column), pa.array(texts, pa.string())), path)
    with pytest.raises(MixValidationError) as err:
        run_mix(annotated_build, out)
    assert "caption.jsonl line" in str(err.value) and "exactly one <image>" in str(err.value)
    assert "nothing was committed" in str(err.value)
    assert not any((out / layout.MIXTURES_DIR).rglob("*.jsonl"))
    assert not any((out / layout.MIXTURES_DIR).rglob(layout.MIX_DATA_YAML))

    (out / layout.annotation_path("qa", layout.shard_name(1))).unlink()
    with pytest.raises(StageInputMissing, match="run the `annotate` stage"):
        run_mix(annotated_build, out)


def test_config_errors_name_the_key(annotated_build, tmp_path):
    def build(*overrides):
        return make_config(annotated_build.sources, tmp_path, list(overrides))

    with pytest.raises(ConfigError, match=r"mix\.stages\.stage5: no sampling stage named 'stage5'"):
        build("mix.stages.stage5={}")
    with pytest.raises(ConfigError, match=r"mix\.stages\.stage3\.tasks\.qa: unknown task"):
        build("mix.stages.stage3.tasks.qa={}")
    with pytest.raises(ConfigError, match=r"sampling_strategy: 'half'"):
        build("mix.stages.stage3.tasks.caption.sampling_strategy=half")
    with pytest.raises(ConfigError, match=r"mix\.stages\.stage1\.videos\[0\]: unknown duration class"):
        build("mix.stages.stage1.videos=[medium]")
    with pytest.raises(ConfigError, match=r"mix\.long_max_s"):
        build("mix.long_min_s=4000")
    with pytest.raises(ConfigError, match=r"mix\.stages\.stage4: no sampling stage"):
        build("sampling.stages.stage4=null", "mix.stages.stage4.video_read_type=img")
    # Dropping a sampling stage drops its default mixture; null drops a mixture or a task.
    cfg = build("sampling.stages.stage4=null", "mix.stages.stage1=null", "mix.stages.stage3.tasks.free_qa=null")
    assert list(cfg.mix.stages) == ["stage2", "stage3"] and "free_qa" not in cfg.mix.stages["stage3"].tasks
    assert build("mix.stages.stage3.tasks.caption.sampling_strategy=first:50%").mix.stages["stage3"].tasks[
        "caption"].sampling_strategy == "first:50%"


# ---------------------------------------------------------------------------------------------------------------
# s3:// output against a real moto_server


def test_s3_output(annotated_build, mixed, moto_endpoint):
    endpoint = moto_endpoint
    client = s3_client(endpoint)
    client.create_bucket(Bucket="mix")
    root = annotated_build.out
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "mix", f"build/{path.relative_to(root)}")
    out_uri = "s3://mix/build"
    result = run_mix(annotated_build, out_uri, f"storage.s3_endpoint_url={endpoint}")
    assert result == mixed[1]

    def listing():
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="mix", Prefix="build/mixtures/"):
            found.update({o["Key"]: (o["ETag"], o["LastModified"]) for o in page.get("Contents", [])})
        return found

    def read(key):
        return client.get_object(Bucket="mix", Key=key)["Body"].read()

    before = listing()
    local_out = mixed[0]
    for stage in STAGES:
        for name in ("caption.jsonl", layout.MIX_DATA_YAML, layout.MIX_SHARDS_TXT, layout.MIX_WEIGHTS_JSON):
            rel = f"{layout.mixture_dir(stage)}/{name}"
            assert read(f"build/{rel}") == (local_out / rel).read_bytes(), rel
        assert pq.read_table(io.BytesIO(read(f"build/{layout.mixture_members_path(stage)}"))).equals(
            pq.read_table(local_out / layout.mixture_members_path(stage)))
    for ds in mix_consume.read_data_yaml(f"{out_uri}/{layout.mixture_dir('stage3')}/data.yaml"):
        assert ds["data_root"] == f"{out_uri}/{layout.MIX_VIDEOS_DIR}" and storage.exists(ds["json_path"])
        for rec in map(json.loads, storage.read_bytes(ds["json_path"]).decode().splitlines()):
            assert storage.exists(f"{ds['data_root']}/{rec['video']}")
    run_mix(annotated_build, out_uri, f"storage.s3_endpoint_url={endpoint}")
    assert listing() == before


def test_partitioning_changes_no_byte(annotated_build, tmp_path):
    """One partition (both shards in one task) and two (a task per shard) give the same files, byte for byte, with
    caps, the JSON list and InternVideo variants and a frame-directory stage; the parts are gone afterwards."""
    options = ["mix.stages.stage2.video_read_type=img", "mix.timestamp_prompt=inline", "mix.json_list=true",
               "mix.internvideo2_5=true", "mix.stages.stage3.tasks.caption.max_records=3",
               "mix.stages.stage3.tasks.event_count.max_records=1"]
    trees = []
    for partition_shards in (1, 16):
        out = copy_build(annotated_build, tmp_path / f"p{partition_shards}")
        result = run_mix(annotated_build, out, *options, f"mix.partition_shards={partition_shards}")
        assert result["records"]["stage3"]["caption"] == 3 and result["records"]["stage3"]["event_count"] == 1
        assert not (out / layout.MIX_PARTS_DIR).exists()
        trees.append({k: v[0] for k, v in snapshot(out / layout.MIXTURES_DIR).items()})
    assert trees[0] == trees[1]
    assert any(k.endswith(".jpg") for k in trees[0]) and any(k.endswith("members.parquet") for k in trees[0])
    capped = pq.read_table(tmp_path / "p1" / layout.mixture_members_path("stage3")).to_pylist()
    assert len({r["record_id"] for r in capped if r["task"] == "caption"}) == 3
