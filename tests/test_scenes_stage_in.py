"""A video split into segments has its source fetched and verified once, not once per segment (pipeline.ingest.stage_in).

What reached S3 is read from the session moto_server's request log and the opens of a local source from the kernel
(inotify), both outside the code under test. The videos are ffmpeg-made with hard cuts at known times, 90 s long so
that `scenes.segment_s=30` splits each into three segments (edges at 30 and 60 s, next to the cuts at 29.9 and 59.9 s).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import select
import shutil
import struct
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import make_config, s3_client

from pipeline import synthetic
from pipeline.core import runner, tempdirs
from pipeline.core.context import StageContext
from pipeline.ingest import scenes
from pipeline.stages import scenes as scenes_stage
from schemas import layout, reasons

BUCKET = "stagein"
SPLIT = ["scenes.segment_s=30"]
SEGMENTS = ((0.0, 30.0), (30.0, 60.0), (60.0, float("inf")))  # what segments_of gives for 90 s at segment_s=30
SMALL = {"width": 160, "height": 120, "fps": 10}
LONG = synthetic.SyntheticVideo([9.9] + [10.0] * 7 + [10.1], **SMALL)
OTHER = synthetic.SyntheticVideo([15.0, 14.9, 30.2, 30.0], **SMALL)
CHANGED_TO = synthetic.SyntheticVideo([45.0, 45.0], **SMALL)
SHORT = synthetic.SyntheticVideo([5.0, 5.0], **SMALL)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stagein-media")
    made = {name: Path(synthetic.write(video, str(folder / f"{name}.mp4")))
            for name, video in [("long", LONG), ("other", OTHER), ("changed_to", CHANGED_TO), ("short", SHORT)]}
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in made.values()}) == len(made)
    return made


def one_pass_starts(path: Path) -> list[float]:
    """Scene starts after the first, from one fast-detector pass over the whole file."""
    return [b["time_s"] for b in scenes.fast_cut_times(str(path))]


def starts_of(scene_list: list[dict]) -> list[float]:
    return [s["start_s"] for s in scene_list[1:]]


def object_gets(log: Path, offset: int, key: str) -> int:
    """GET requests for s3://BUCKET/key in the moto_server log after byte `offset`."""
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return len(re.findall(rf'"GET /{BUCKET}/{re.escape(key)}[ ?]', text))


@pytest.fixture(scope="module")
def bucket(moto_endpoint):
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def s3_build(ray_local, moto_endpoint, moto_log, bucket, media, tmp_path_factory):
    """crawl + probe, then `changed.mp4` is overwritten, then scenes; the GETs each phase sent to moto_server."""
    for key, name in [("src/long.mp4", "long"), ("src/changed.mp4", "other"), ("src/short.mp4", "short")]:
        bucket.put_object(Bucket=BUCKET, Key=key, Body=media[name].read_bytes())
    out = tmp_path_factory.mktemp("stagein-s3-out")
    settings = [f"storage.s3_endpoint_url={moto_endpoint}", *SPLIT]
    start = moto_log.stat().st_size
    runner.run_build(make_config([f"s3://{BUCKET}/src"], out, settings, stages=["crawl", "probe"]), quiet=True)
    probed = moto_log.stat().st_size
    bucket.put_object(Bucket=BUCKET, Key="src/changed.mp4", Body=media["changed_to"].read_bytes())
    runner.run_build(make_config([f"s3://{BUCKET}/src"], out, settings, stages=["scenes"]), quiet=True)
    gets = {phase: {key: object_gets(moto_log, offset, f"src/{key}") for key in ("long.mp4", "changed.mp4")}
            for phase, offset in [("probe", start), ("scenes", probed)]}
    gets["probe"] = {k: v - gets["scenes"][k] for k, v in gets["probe"].items()}  # probe's log starts before scenes'
    return out, gets


def test_a_split_s3_source_is_downloaded_once_and_its_scenes_equal_one_pass(s3_build, media):
    out, gets = s3_build
    assert gets["probe"]["long.mp4"] == 1  # the log sees a download: one GET
    assert gets["scenes"]["long.mp4"] == 1  # three segments, one download (it was three before)
    videos = {v["source_uri"]: v for v in pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()}
    found = starts_of(videos[f"s3://{BUCKET}/src/long.mp4"]["scenes"])
    assert found == one_pass_starts(media["long"])
    assert found == pytest.approx(LONG.cut_times_s, abs=0.15)


def test_a_source_changed_since_probe_rejects_its_video_only(s3_build, media):
    out, gets = s3_build
    rejects = pq.read_table(out / layout.MANIFEST_REJECTS).to_pylist()
    assert [(r["source_uri"], r["reason"], r["stage"]) for r in rejects] == [
        (f"s3://{BUCKET}/src/changed.mp4", reasons.SOURCE_CHANGED, "scenes")]
    assert rejects[0]["message"].startswith(f"cannot read the source for scene detection: s3://{BUCKET}/src/changed.mp4 "
                                            "changed since it was probed")
    assert gets["scenes"]["changed.mp4"] == 1  # found changed once, by the video's one fetch
    videos = {v["source_uri"]: v for v in pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()}
    assert sorted(videos) == [f"s3://{BUCKET}/src/long.mp4", f"s3://{BUCKET}/src/short.mp4"]
    assert starts_of(videos[f"s3://{BUCKET}/src/long.mp4"]["scenes"]) == one_pass_starts(media["long"])
    assert starts_of(videos[f"s3://{BUCKET}/src/short.mp4"]["scenes"]) == pytest.approx(SHORT.cut_times_s, abs=0.15)


class OpenCounter:
    """Counts the opens of one file by any process, from the kernel's inotify events (Linux)."""

    IN_ACCESS, IN_CLOSE_NOWRITE, IN_OPEN = 0x1, 0x10, 0x20

    def __init__(self, path: Path):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            pytest.skip("inotify is not available here")
        # reads and closes are watched too: two opens in a row with no event between would be merged into one
        if libc.inotify_add_watch(self.fd, os.fsencode(path), self.IN_OPEN | self.IN_ACCESS | self.IN_CLOSE_NOWRITE) < 0:
            os.close(self.fd)
            pytest.skip("inotify cannot watch the file")
        self.opens = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            if select.select([self.fd], [], [], 0.05)[0]:
                self._count(os.read(self.fd, 1 << 16))
        while select.select([self.fd], [], [], 0)[0]:
            self._count(os.read(self.fd, 1 << 16))

    def _count(self, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            _, mask, _, name_len = struct.unpack_from("iIII", data, offset)
            offset += 16 + name_len
            self.opens += bool(mask & self.IN_OPEN)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        os.close(self.fd)
        return self.opens


def test_a_split_local_source_is_hashed_once(ray_local, media, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    path = src / "long.mp4"
    shutil.copyfile(media["long"], path)
    out = tmp_path / "out"
    runner.run_build(make_config([src], out, SPLIT, stages=["crawl", "probe"]), quiet=True)
    counter = OpenCounter(path)
    runner.run_build(make_config([src], out, SPLIT, stages=["scenes"]), quiet=True)
    stage_opens = counter.stop()
    counter = OpenCounter(path)
    for start, end in SEGMENTS:  # what the three segment tasks decode, and nothing else
        scenes.fast_cut_times(str(path), start, end)
    decode_opens = counter.stop()
    assert decode_opens >= 3
    assert stage_opens == decode_opens + 1  # one hash read for the video (a hash per segment before: + 3)
    videos = pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()
    assert starts_of(videos[0]["scenes"]) == one_pass_starts(path)


def test_no_staged_copy_is_left_in_the_job_folder(ray_local, moto_endpoint, moto_log, bucket, media, tmp_path):
    data = media["long"].read_bytes()
    bucket.put_object(Bucket=BUCKET, Key="alone/long.mp4", Body=data)
    cfg = make_config([f"s3://{BUCKET}/alone"], tmp_path / "out", [f"storage.s3_endpoint_url={moto_endpoint}", *SPLIT])
    video = {"video_id": "v", "source_uri": f"s3://{BUCKET}/alone/long.mp4", "duration_s": LONG.duration_s,
             "sha256": hashlib.sha256(data).hexdigest()}
    start = moto_log.stat().st_size
    folder = tempdirs.start_job(cfg.out, cfg.storage.tmp_dir)
    try:
        import ray

        refs = scenes_stage.segment_tasks([("part", [video])], StageContext(cfg))
        [results] = ray.get(refs["part"])
        left = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))
    finally:
        tempdirs.end_job(folder)
    assert len(results) == len(SEGMENTS) and all("times" in r for r in results)
    assert starts_of(scenes_stage.stitched(results, LONG.duration_s, cfg.scenes)) == one_pass_starts(media["long"])
    assert object_gets(moto_log, start, "alone/long.mp4") == 1
    assert left == [tempdirs.OWNER_FILE]  # the driver's: the copy and the workers' folders are gone


def test_a_storage_outage_while_staging_in_stops_the_stage(ray_local, moto_endpoint, bucket, media, tmp_path):
    import servers

    from pipeline.core.entry import systemic_failure

    bucket.put_object(Bucket=BUCKET, Key="outage/long.mp4", Body=media["long"].read_bytes())
    out = tmp_path / "out"
    source = [f"s3://{BUCKET}/outage"]
    runner.run_build(make_config(source, out, [f"storage.s3_endpoint_url={moto_endpoint}", *SPLIT],
                                 stages=["crawl", "probe"]), quiet=True)
    down = f"http://127.0.0.1:{servers.free_port()}"  # nothing listens there
    settings = [f"storage.s3_endpoint_url={down}", "storage.s3_connect_timeout_s=1", "storage.s3_max_attempts=1", *SPLIT]
    with pytest.raises(Exception) as e:
        runner.run_build(make_config(source, out, settings, stages=["scenes"]), quiet=True)
    assert systemic_failure(e.value).startswith(f"storage: S3 endpoint {down} failed GetObject of "
                                                f"s3://{BUCKET}/outage/long.mp4 (")
    assert pq.read_table(out / layout.MANIFEST_REJECTS).num_rows == 0  # an outage is no reject
