"""Probing real ffmpeg-made files (pipeline.ingest.probe.analyze), the isolated child process, and local fetch hashing."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import servers

from pipeline import synthetic
from pipeline.ingest import probe
from pipeline.ingest.isolated import IsolatedFailure, IsolatedWorker
from pipeline.io import fetch, ffmpeg
from schemas import hashing, reasons

LIMITS = dict(min_duration_s=1.0, max_duration_s=14400.0, max_pixels=3840 * 2160, check_integrity=True)
MP4 = "mov,mp4,m4a,3gp,3g2,mj2"

# name -> (container, codec, width, height, has_audio)
EXPECTED = {
    "cuts.mp4": (MP4, "h264", 320, 240, False),
    "with audio and spaces.mp4": (MP4, "h264", 320, 240, True),
    "ünïcode.name.v2.mp4": (MP4, "h264", 256, 144, False),
    "sub dir/clip.webm": ("matroska,webm", "vp8", 320, 240, False),
}


def analyze(path, **overrides):
    return probe.analyze(str(path), **{**LIMITS, **overrides})


@pytest.fixture(scope="module")
def rotated(corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("rotated")
    out = {}
    for deg in ("90", "-90"):
        dst = str(d / f"rot{deg}.mp4")
        ffmpeg.run(["-display_rotation", deg, "-i", str(corpus.root / "cuts.mp4"), "-c", "copy", dst])
        out[int(deg)] = dst
    return out


@pytest.mark.parametrize("name", list(EXPECTED))
def test_good_files(corpus, name):
    video: synthetic.SyntheticVideo = corpus.good[name]
    container, codec, width, height, has_audio = EXPECTED[name]
    info = analyze(corpus.root / name)
    assert info["container"] == container
    assert info["codec"] == codec
    assert (info["width"], info["height"]) == (width, height) == (video.width, video.height)
    assert info["rotation"] == 0
    assert info["has_audio"] is has_audio
    assert info["fps"] == pytest.approx(video.fps)
    # lavfi rounds each scene up to whole frames: at most one extra frame per scene
    assert video.duration_s - 1e-6 <= info["duration_s"] <= video.duration_s + len(video.scene_durations_s) / video.fps
    assert info["num_frames"] == round(info["duration_s"] * info["fps"])
    assert info["reader"] == "decord"
    assert info["reader_fps"] == pytest.approx(video.fps)
    assert info["reader_num_frames"] == round(info["duration_s"] * info["fps"]) == info["num_frames"]
    assert info["bitrate"] is None or info["bitrate"] > 0
    assert set(info) == {"container", "codec", "width", "height", "rotation", "fps", "num_frames", "duration_s",
                         "has_audio", "bitrate", "reader", "reader_num_frames", "reader_fps"}


def test_exact_values_of_the_cut_video(corpus):
    info = analyze(corpus.root / "cuts.mp4")
    assert info["duration_s"] == pytest.approx(12.0)
    assert info["num_frames"] == 300
    assert info["reader_num_frames"] == 300
    assert info["fps"] == 25.0


def test_integrity_check_off_gives_the_same_record(corpus):
    path = corpus.root / "with audio and spaces.mp4"
    assert analyze(path, check_integrity=False) == analyze(path)


@pytest.mark.parametrize("name", ["zero.mp4", "random.mp4", "page.mp4", "truncated.mp4", "audio_only.mp4",
                                  "short.mp4"])
def test_broken_files_are_rejected_with_reason(corpus, name):
    with pytest.raises(probe.ProbeReject) as info:
        analyze(corpus.root / name)
    assert info.value.reason == corpus.broken[name]
    assert info.value.reason in reasons.ALL
    assert info.value.message


def test_every_broken_file_is_covered(corpus):
    assert set(corpus.broken) == {"zero.mp4", "random.mp4", "page.mp4", "truncated.mp4", "audio_only.mp4",
                                  "short.mp4"}


def test_short_message_names_the_duration(corpus):
    with pytest.raises(probe.ProbeReject) as info:
        analyze(corpus.root / "short.mp4")
    assert "0.5" in info.value.message


def test_min_duration_zero_accepts_the_short_file(corpus):
    info = analyze(corpus.root / "short.mp4", min_duration_s=0.0)
    assert info["duration_s"] == pytest.approx(0.5, abs=0.05)


def test_too_long(corpus):
    with pytest.raises(probe.ProbeReject) as info:
        analyze(corpus.root / "cuts.mp4", max_duration_s=5.0)
    assert info.value.reason == reasons.TOO_LONG
    assert "12.0" in info.value.message


def test_too_large(corpus):
    with pytest.raises(probe.ProbeReject) as info:
        analyze(corpus.root / "cuts.mp4", max_pixels=320 * 240 - 1)
    assert info.value.reason == reasons.TOO_LARGE
    assert "320x240" in info.value.message
    # exactly at the limit is fine
    assert analyze(corpus.root / "cuts.mp4", max_pixels=320 * 240)["width"] == 320


@pytest.mark.parametrize("deg", [90, -90])
def test_rotated_video_reports_display_size(rotated, deg):
    info = analyze(rotated[deg])
    assert abs(info["rotation"]) == 90
    assert (info["width"], info["height"]) == (240, 320)
    assert info["num_frames"] == 300
    assert info["duration_s"] == pytest.approx(12.0)


def test_missing_file_raises(tmp_path):
    with pytest.raises(OSError):
        analyze(tmp_path / "nope.mp4")


def test_truncated_webm_is_rejected(corpus, tmp_path):
    dst = synthetic.write_truncated_copy(str(corpus.root / "sub dir/clip.webm"), str(tmp_path / "half.webm"), 0.5)
    with pytest.raises(probe.ProbeReject) as info:
        analyze(dst)
    assert info.value.reason == reasons.UNREADABLE


# ---------------------------------------------------------------------------------------------------------------
# The isolated child process


@pytest.fixture(scope="module")
def worker():
    w = IsolatedWorker()
    yield w
    w.close()


def test_isolated_probe_equals_direct(worker, corpus):
    for name in ("cuts.mp4", "sub dir/clip.webm"):
        path = str(corpus.root / name)
        assert worker.call("probe", 60, path=path, **LIMITS) == probe.analyze(path, **LIMITS)


def test_isolated_reject_keeps_its_reason(worker, corpus):
    for name, reason in corpus.broken.items():
        with pytest.raises(IsolatedFailure) as info:
            worker.call("probe", 60, path=str(corpus.root / name), **LIMITS)
        assert info.value.reason == reason, name
        assert info.value.message


def test_isolated_unexpected_error_is_unreadable(worker, tmp_path):
    with pytest.raises(IsolatedFailure) as info:
        worker.call("probe", 60, path=str(tmp_path / "missing.mp4"), **LIMITS)
    assert info.value.reason == reasons.UNREADABLE
    assert "FileNotFoundError" in info.value.message


def test_isolated_scenes(worker, corpus):
    video = corpus.good["cuts.mp4"]
    scenes = worker.call("scenes", 120, path=str(corpus.root / "cuts.mp4"), duration_s=video.duration_s)
    assert len(scenes) == 3
    assert scenes[0]["start_s"] == 0.0 and scenes[-1]["end_s"] == video.duration_s


def test_isolated_timeout_then_recovers(corpus, tmp_path):
    # Opening a FIFO with no writer blocks forever: the child hangs like a stuck demuxer.
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    with IsolatedWorker() as w:
        # the probe itself refuses a FIFO at once (it has no bytes), without blocking
        with pytest.raises(IsolatedFailure) as info:
            w.call("probe", 30, path=str(fifo), **LIMITS)
        assert info.value.reason == reasons.UNREADABLE
        with pytest.raises(IsolatedFailure) as info:
            w.call("scenes", 2, path=str(fifo), duration_s=5.0)
        assert info.value.reason == reasons.TIMEOUT
        assert "2 s" in info.value.message
        time.sleep(0.5)
        assert not servers.processes_of(cmdline_marker=str(fifo)), "the hung child's decoder was killed with it"
        # a fresh child serves the next call
        path = str(corpus.root / "cuts.mp4")
        assert w.call("probe", 60, path=path, **LIMITS)["num_frames"] == 300


def test_isolated_tiny_timeout(corpus):
    with IsolatedWorker() as w:
        with pytest.raises(IsolatedFailure) as info:
            w.call("probe", 0.001, path=str(corpus.root / "cuts.mp4"), **LIMITS)
        assert info.value.reason == reasons.TIMEOUT
        assert w.call("probe", 60, path=str(corpus.root / "cuts.mp4"), **LIMITS)["duration_s"] == pytest.approx(12.0)


def test_process_worker_keeps_its_child_between_tasks(corpus, monkeypatch):
    from pipeline.ingest import isolated

    path = str(corpus.root / "cuts.mp4")
    w = isolated.process_worker()
    assert isolated.process_worker() is w
    w.call("probe", 60, path=path, **LIMITS)
    first = w._proc.pid
    assert w.call("probe", 60, path=path, **LIMITS)["num_frames"] == 300
    assert w._proc.pid == first, "a second call (the next part's task) reuses the running child"
    monkeypatch.setenv("LONGVID_TEST_MARKER", "changed")
    w.call("probe", 60, path=path, **LIMITS)
    assert w._proc.pid != first, "a changed environment starts a new child"
    assert not os.path.exists(f"/proc/{first}"), "the old child was stopped"


# ---------------------------------------------------------------------------------------------------------------
# Fetching a local file


def test_fetch_local_hashes_in_place(corpus):
    path = str(corpus.root / "with audio and spaces.mp4")
    with open(path, "rb") as f:
        data = f.read()
    with fetch.fetch(path, max_bytes=1 << 40) as got:
        assert got.path == path
        assert got.sha256 == hashlib.sha256(data).hexdigest()
        assert got.bytes == len(data)
    assert os.path.exists(path)  # a local input is never deleted
    assert hashing.file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_fetch_same_bytes_same_hash(corpus):
    a, b = corpus.duplicate
    with fetch.fetch(str(corpus.root / a), 1 << 40) as fa, fetch.fetch(str(corpus.root / b), 1 << 40) as fb:
        assert fa.sha256 == fb.sha256


def test_fetch_empty_file(corpus):
    with fetch.fetch(str(corpus.root / "zero.mp4"), 1 << 40) as got:
        assert got.bytes == 0
        assert got.sha256 == hashlib.sha256(b"").hexdigest()


def test_fetch_too_large(corpus):
    path = str(corpus.root / "cuts.mp4")
    with pytest.raises(fetch.FetchError) as info:
        with fetch.fetch(path, max_bytes=1000):
            pass
    assert info.value.reason == reasons.TOO_LARGE
    with pytest.raises(fetch.FetchError) as info:
        with fetch.fetch(path, max_bytes=1 << 40, size_hint=(1 << 40) + 1):
            pass
    assert info.value.reason == reasons.TOO_LARGE
    size = os.path.getsize(path)
    with fetch.fetch(path, max_bytes=size) as got:  # exactly at the limit passes
        assert got.bytes == size


def test_fetch_missing_file(tmp_path):
    with pytest.raises(fetch.FetchError) as info:
        with fetch.fetch(str(tmp_path / "gone.mp4"), 1 << 40):
            pass
    assert info.value.reason == reasons.DOWNLOAD_FAILED
