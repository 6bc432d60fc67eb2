"""Shot detection on real footage joined by cuts, dissolves and fades at known times; segments stitched = one pass.

The footage is tests/data/media (see its README) cut into single shots and joined by pipeline.ingest.shots.joined_clips. The
expected transition times below are transcribed by hand from the shot lengths (each shot is played forward then
backward, at 25 fps): e.g. the first shot is 3.9 s = 98 frames, 196 frames played both ways, and the 1 s dissolve into
the second overlaps its last 25 frames, frames 171-196, whose middle is 7.34 s.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_config

from pipeline.core.errors import Rejection
from pipeline.ingest import scenes
from pipeline.ingest.shots import frames as shot_frames
from pipeline.ingest.shots import joined_clips
from pipeline.ingest.shots import segments as shot_segments
from pipeline.ingest.shots.frames import ShotDecodeError
from schemas import reasons

TOLERANCE_S = 0.5
CYCLE_S = 62.84
CYCLE_TRANSITIONS = [("dissolve", 7.34), ("fade", 17.24), ("cut", 21.8), ("dissolve", 24.88), ("fade", 27.56),
                     ("dissolve", 30.16), ("cut", 39.8), ("fade", 43.88), ("dissolve", 51.48), ("fade", 55.8),
                     ("cut", 59.16)]
CYCLE_GRADUAL_LENGTHS_S = [1.0, 2.0, 2.0, 0.48, 1.52, 0.96, 0.48, 1.52]  # whole frames; a fade is two halves of d//2


@pytest.fixture(scope="session")
def joined(tmp_path_factory):
    folder = tmp_path_factory.mktemp("joined")
    path = str(folder / "cycle.mp4")
    transitions, length = joined_clips.write(path)
    twice = str(folder / "cycle x2.mp4")
    joined_clips.repeat(path, 2, twice)
    return path, transitions, length, twice


def test_the_joined_footage_is_what_the_plan_says(joined):
    path, transitions, length, _ = joined
    assert length == pytest.approx(CYCLE_S)
    assert [(t.kind, round(t.time_s, 2)) for t in transitions] == CYCLE_TRANSITIONS
    assert [round(t.end_s - t.start_s, 2) for t in transitions if t.gradual] == CYCLE_GRADUAL_LENGTHS_S
    # in the file: a fade's middle frame is black, the frames a second either side of it are not
    spec = shot_frames.FrameSpec(rate=25, fast_decode=False)
    frames = shot_frames.read_frames(path, spec)
    assert len(frames) == round(CYCLE_S * 25)
    luma = frames[:, :spec.width * spec.height].mean(axis=1)
    for kind, t in CYCLE_TRANSITIONS:
        if kind == "fade":
            assert luma[round(t * 25)] < 20 and luma[round((t - 1) * 25)] > 40 and luma[round((t + 1) * 25)] > 40


def test_fast_detector_finds_cuts_dissolves_and_fades(joined):
    path, transitions, length, _ = joined
    found = scenes.fast_cut_times(path)
    quality = joined_clips.score([b["time_s"] for b in found], transitions, TOLERANCE_S)
    assert quality["cut_recall"] == 1.0, (found, quality)
    assert quality["gradual_recall"] >= 0.9, (found, quality)
    assert quality["precision"] >= 0.9, (found, quality)
    # and names each transition's kind
    for kind, t in CYCLE_TRANSITIONS:
        near = [b for b in found if abs(b["time_s"] - t) <= TOLERANCE_S]
        assert not near or near[0]["kind"] == kind, (kind, t, near)


def test_detect_scenes_default_is_the_fast_detector(joined):
    path, transitions, length, _ = joined
    found = scenes.detect_scenes(path, length)
    assert found[0]["start_s"] == 0.0 and found[-1]["end_s"] == length
    starts = [s["start_s"] for s in found[1:]]
    assert starts == [b["time_s"] for b in scenes.fast_cut_times(path)]


def test_content_detector_misses_gradual_transitions(joined):
    # the reason for the fast default: PySceneDetect's content detector sees the cuts but few of the rest
    path, transitions, length, _ = joined
    found = scenes.detect_scenes(path, length, detector="content")
    quality = joined_clips.score([s["start_s"] for s in found[1:]], transitions, TOLERANCE_S)
    assert quality["cut_recall"] == 1.0
    assert quality["gradual_recall"] < 0.9


def test_segment_plan_covers_the_video_on_the_frame_grid():
    segments = shot_segments.plan(125.68, 30.0, 10.0)
    assert len(segments) == 4
    assert segments[0].start_s == 0.0 and math.isinf(segments[-1].end_s)
    for a, b in zip(segments, segments[1:]):
        assert a.end_s == b.start_s
        assert round(b.start_s * 10) == pytest.approx(b.start_s * 10)
    assert shot_segments.plan(35.0, 30.0, 10.0) == [shot_segments.Segment(0.0, math.inf)]  # no 5 s tail task
    assert [g.start_s for g in shot_segments.plan(40.0, 30.0, 10.0)] == [0.0, 20.0]


def test_segments_stitched_equal_one_pass(joined):
    _, _, length, twice = joined
    one_pass = [b["time_s"] for b in scenes.fast_cut_times(twice)]
    segments = shot_segments.plan(2 * length, 30.0, shot_frames.FrameSpec().rate)
    assert len(segments) == 4
    parts = [[b["time_s"] for b in scenes.fast_cut_times(twice, g.start_s, g.end_s)] for g in segments]
    assert shot_segments.stitch(parts, 0.5) == one_pass
    # and the boundaries near a segment edge are there (the edges fall inside the footage, not only at cuts)
    assert len(one_pass) >= 2 * 10


def test_scenes_stage_splits_a_long_video_and_gets_the_one_pass_scenes(joined, ray_local, tmp_path):
    import pyarrow.parquet as pq

    from pipeline.core import runner
    from schemas import layout

    _, _, length, twice = joined
    cfg = make_config([twice], tmp_path / "out", ["scenes.segment_s=30"], stages=["crawl", "probe", "scenes"])
    runner.run_build(cfg, quiet=True)
    videos = pq.read_table(tmp_path / "out" / layout.MANIFEST_VIDEOS, columns=["scenes"]).to_pylist()
    starts = [s["start_s"] for s in videos[0]["scenes"][1:]]
    assert starts == [b["time_s"] for b in scenes.fast_cut_times(twice)]


def test_undecodable_video_is_a_reject_reason(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(ShotDecodeError) as e:
        scenes.fast_cut_times(str(bad))
    assert e.value.reason == reasons.UNREADABLE


def test_short_fragments_give_no_boundary():
    # fewer than two frames: nothing to compare
    from pipeline.ingest.shots import score as shot_score

    assert shot_score.boundaries(np.zeros((1, 32 * 18 * 3), np.uint8), 32, 18, 10.0) == []


def test_transnetv2_stage_with_the_trained_weights_on_real_footage(ray_local, tmp_path):
    # TransNetV2 on the CPU is slow (tens of frames/s on 2 idle cores): a 10 s clip with one dissolve and one cut,
    # through the scenes stage and its model actor pool
    import pyarrow.parquet as pq

    from pipeline.core import runner
    from schemas import layout

    path = str(tmp_path / "short.mp4")
    transitions, length = joined_clips.write(path, cycle=joined_clips.SHORT_CYCLE)
    assert [(t.kind, round(t.time_s, 2)) for t in transitions] == [("dissolve", 3.18), ("cut", 6.04)]
    cfg = make_config([path], tmp_path / "out", ["scenes.detector=transnetv2"], stages=["crawl", "probe", "scenes"])
    runner.run_build(cfg, quiet=True)
    videos = pq.read_table(tmp_path / "out" / layout.MANIFEST_VIDEOS, columns=["scenes"]).to_pylist()
    starts = [s["start_s"] for s in videos[0]["scenes"][1:]]
    assert len(starts) == 2, starts
    for got, (_, want) in zip(starts, [(t.kind, t.time_s) for t in transitions]):
        assert abs(got - want) <= TOLERANCE_S, starts


def test_a_decode_past_the_timeout_is_a_timeout_reject(joined):
    path, _, _, _ = joined
    with pytest.raises(ShotDecodeError) as e:
        scenes.fast_cut_times(path, timeout_s=0.001)
    assert e.value.reason == reasons.TIMEOUT


def test_a_failed_segment_rejects_its_video_with_the_segment_reason():
    from types import SimpleNamespace

    from pipeline.stages import scenes as scenes_stage

    s = SimpleNamespace(min_scene_len_s=0.5)
    ok = {"times": [12.0]}
    failed = {"reason": reasons.TIMEOUT, "message": "decoding for shot detection took over 5 s", "decode": True}
    with pytest.raises(ShotDecodeError) as e:
        scenes_stage.stitched([ok, failed, ok], 900.0, s)
    assert (e.value.reason, e.value.message) == (failed["reason"], failed["message"])
    changed = {"reason": reasons.SOURCE_CHANGED, "message": "the source changed since probe", "decode": False}
    with pytest.raises(Rejection) as e:
        scenes_stage.stitched([ok, changed], 900.0, s)
    assert not isinstance(e.value, ShotDecodeError) and e.value.reason == reasons.SOURCE_CHANGED
    assert scenes_stage.stitched([ok, {"times": [12.2, 400.0]}], 900.0, s) == [
        {"start_s": 0.0, "end_s": 12.0}, {"start_s": 12.0, "end_s": 400.0}, {"start_s": 400.0, "end_s": 900.0}]


def test_a_split_video_gone_since_probe_is_a_reject_row(joined, ray_local, tmp_path):
    import os
    import shutil

    import pyarrow.parquet as pq

    from pipeline.core import runner
    from schemas import layout

    _, _, _, twice = joined
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(twice, src / "twice.mp4")
    out = tmp_path / "out"
    runner.run_build(make_config([src], out, ["scenes.segment_s=30"], stages=["crawl", "probe"]), quiet=True)
    os.unlink(src / "twice.mp4")
    runner.run_build(make_config([src], out, ["scenes.segment_s=30"], stages=["scenes"]), quiet=True)
    assert pq.read_table(out / layout.MANIFEST_VIDEOS).num_rows == 0
    rejects = pq.read_table(out / layout.MANIFEST_REJECTS).to_pylist()
    assert [r["reason"] for r in rejects] == [reasons.DOWNLOAD_FAILED]
    assert "cannot read the source for scene detection" in rejects[0]["message"]


def test_change_sums_are_exact_with_and_without_opencv():
    from pipeline.ingest.shots import score as shot_score

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (300, 32 * 18 * 3), dtype=np.uint8)
    y = rng.integers(0, 256, (300, 32 * 18 * 3), dtype=np.uint8)
    exact = np.abs(x.astype(np.int64) - y).sum(axis=1)
    assert np.array_equal(shot_score.block_sums_numpy(x, y), exact)
    assert np.array_equal(shot_score.abs_change(x, y), exact / (255.0 * x.shape[1]))
