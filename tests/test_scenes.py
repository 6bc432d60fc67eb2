"""Shot boundaries on videos with known cuts, and the contiguous-scene rule."""

from __future__ import annotations

import pytest

from pipeline.ingest import probe, scenes

TOLERANCE_S = 0.5


def duration_of(path) -> float:
    return probe.analyze(str(path), 1.0, 14400.0, 3840 * 2160, False)["duration_s"]


def assert_contiguous(found, duration):
    assert found, "at least one scene"
    assert found[0]["start_s"] == 0.0
    assert found[-1]["end_s"] == duration
    for a, b in zip(found, found[1:]):
        assert a["end_s"] == b["start_s"]
    for s in found:
        assert s["end_s"] > s["start_s"]
        assert set(s) == {"start_s", "end_s"}


def assert_cuts_match(found, expected_cuts):
    cuts = [s["start_s"] for s in found[1:]]
    assert len(cuts) == len(expected_cuts), (cuts, expected_cuts)
    for got, want in zip(cuts, expected_cuts):
        assert abs(got - want) <= TOLERANCE_S, (cuts, expected_cuts)


@pytest.mark.parametrize("name", ["cuts.mp4", "with audio and spaces.mp4", "ünïcode.name.v2.mp4", "sub dir/clip.webm"])
def test_content_detector_finds_known_cuts(corpus, name):
    video = corpus.good[name]
    path = corpus.root / name
    duration = duration_of(path)
    found = scenes.detect_scenes(str(path), duration)
    assert_contiguous(found, duration)
    assert_cuts_match(found, video.cut_times_s)


def test_three_scene_video_exact_layout(corpus):
    found = scenes.detect_scenes(str(corpus.root / "cuts.mp4"), 12.0)
    assert [(round(s["start_s"], 2), round(s["end_s"], 2)) for s in found] == [(0.0, 4.0), (4.0, 7.0), (7.0, 12.0)]


@pytest.mark.parametrize("detector", ["adaptive", "hash", "histogram"])
def test_other_detectors_run(corpus, detector):
    video = corpus.good["cuts.mp4"]
    found = scenes.detect_scenes(str(corpus.root / "cuts.mp4"), video.duration_s, detector=detector)
    assert_contiguous(found, video.duration_s)
    assert_cuts_match(found, video.cut_times_s)


def test_fixed_downscale(corpus):
    video = corpus.good["cuts.mp4"]
    found = scenes.detect_scenes(str(corpus.root / "cuts.mp4"), video.duration_s, downscale=2)
    assert_contiguous(found, video.duration_s)
    assert_cuts_match(found, video.cut_times_s)


def test_scenes_end_at_the_given_duration(corpus):
    # the caller's duration (from the probe) bounds the scenes, even if it is shorter than the stream
    found = scenes.detect_scenes(str(corpus.root / "cuts.mp4"), 6.0)
    assert_contiguous(found, 6.0)
    assert [s["start_s"] for s in found[1:]] == pytest.approx([4.0], abs=TOLERANCE_S)


def test_unknown_detector(corpus):
    with pytest.raises((KeyError, ValueError)):
        scenes.detect_scenes(str(corpus.root / "cuts.mp4"), 12.0, detector="magic")


# ---------------------------------------------------------------------------------------------------------------
# contiguous()


def test_contiguous_no_cuts():
    assert scenes.contiguous([], 10.0) == [{"start_s": 0.0, "end_s": 10.0}]


def test_contiguous_sorts_cuts():
    assert scenes.contiguous([7.0, 2.5], 10.0) == [
        {"start_s": 0.0, "end_s": 2.5}, {"start_s": 2.5, "end_s": 7.0}, {"start_s": 7.0, "end_s": 10.0}]


def test_contiguous_drops_cuts_on_or_outside_the_ends():
    assert scenes.contiguous([0.0, -1.0, 4.0, 10.0, 12.5], 10.0) == [
        {"start_s": 0.0, "end_s": 4.0}, {"start_s": 4.0, "end_s": 10.0}]


def test_contiguous_collapses_repeated_cuts():
    assert scenes.contiguous([3.0, 3.0, 3.0], 9.0) == [{"start_s": 0.0, "end_s": 3.0}, {"start_s": 3.0, "end_s": 9.0}]


def test_contiguous_covers_the_duration_exactly():
    cuts = [0.04 * k for k in range(1, 300, 7)]
    out = scenes.contiguous(cuts, 12.0)
    assert out[0]["start_s"] == 0.0 and out[-1]["end_s"] == 12.0
    assert all(a["end_s"] == b["start_s"] for a, b in zip(out, out[1:]))
    assert sum(s["end_s"] - s["start_s"] for s in out) == pytest.approx(12.0)
    assert len(out) == len([c for c in cuts if 0 < c < 12.0]) + 1


def test_contiguous_zero_duration_is_empty():
    assert scenes.contiguous([1.0], 0.0) == []
